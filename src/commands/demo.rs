//! `georep demo`: the whole product on one machine in a few seconds — a
//! local primary and two replica registries, a sample image set pushed to
//! the primary, one sync, and where each tag landed (checked independently
//! with a HEAD in every region).

use std::path::PathBuf;

use anyhow::Context;

use crate::cli::DemoArgs;
use crate::commands::ExitStatus;
use crate::config;
use crate::engine::{Engine, SyncOptions};
use crate::lab::corpus::{Corpus, CorpusSpec};
use crate::lab::localreg::{LocalRegistry, Ports};
use crate::registry::Scope;
use crate::units::human_bytes;
use crate::units::table;

const PRIMARY: &str = "westeurope";
const REGIONS: [&str; 2] = ["eastus", "japaneast"];

pub async fn run(args: &DemoArgs) -> anyhow::Result<ExitStatus> {
    let (dir, temporary) = crate::lab::localreg::work_dir(args.dir.as_deref(), "georep-demo")?;

    eprintln!(
        "starting a primary and {} replica registries in {} ...",
        REGIONS.len(),
        dir.display()
    );
    let mut ports = Ports::from_base(args.port_base);
    let primary = LocalRegistry::start(&dir.join(PRIMARY), ports.options()?).await?;
    let mut replicas = Vec::new();
    for name in REGIONS {
        replicas.push(LocalRegistry::start(&dir.join(name), ports.options()?).await?);
    }

    let config_path = dir.join("georep.yaml");
    let mut yaml = format!(
        "# Written by `georep demo`; try `georep sync --config {}`.\nstate_dir: ./state\nprimary:\n  name: {PRIMARY}\n  url: {}\nregions:\n",
        config_path.display(),
        primary.url()
    );
    for (name, r) in REGIONS.iter().zip(&replicas) {
        yaml.push_str(&format!("  - name: {name}\n    url: {}\n", r.url()));
    }
    std::fs::write(&config_path, yaml)
        .with_context(|| format!("writing {}", config_path.display()))?;
    let config = config::load(&config_path)?;
    std::fs::create_dir_all(&config.state_dir)?;
    let engine = Engine::new(&config, Engine::open_store(&config)?);

    let corpus = Corpus::generate(&CorpusSpec::preset(args.preset, args.seed)).await;
    eprintln!(
        "pushing {} tags ({} in {} blobs) to {PRIMARY} at {} ...",
        corpus.tags.len(),
        human_bytes(corpus.unique_blob_bytes()),
        corpus.unique_blobs(),
        primary.url()
    );
    corpus
        .push(
            engine
                .primary()
                .context("the demo's config has a primary")?,
        )
        .await
        .context("pushing the sample images to the primary")?;

    eprintln!("replicating to {} ...", REGIONS.join(", "));
    let report = engine.sync(SyncOptions::default()).await;

    // Where did each tag land? Ask every region directly.
    let mut header = vec![
        format!("TAG (primary {PRIMARY} {})", primary.host()),
        "DIGEST".to_owned(),
    ];
    header.extend(
        REGIONS
            .iter()
            .zip(&replicas)
            .map(|(n, r)| format!("{n} {}", r.host())),
    );
    let mut rows = vec![header];
    let mut all_good = true;
    for t in &corpus.tags {
        let mut row = vec![
            format!("{}:{}", t.repository, t.tag),
            t.digest.short().to_owned(),
        ];
        for region in engine.regions() {
            let head = region
                .head_manifest(&t.repository, &t.tag, &Scope::pull(&t.repository))
                .await;
            let cell = match head {
                Ok(Some(h)) if h.digest == t.digest => "ok".to_owned(),
                Ok(Some(h)) => {
                    all_good = false;
                    format!("WRONG {}", h.digest.short())
                }
                Ok(None) => {
                    all_good = false;
                    "MISSING".to_owned()
                }
                Err(e) => {
                    all_good = false;
                    format!("ERROR {e}")
                }
            };
            row.push(cell);
        }
        rows.push(row);
    }
    println!("{}", table(&rows, &[]));
    print!("{}", report.render());
    if all_good && report.ok() {
        println!(
            "\nall {} tags are in every region with the primary's digest.",
            corpus.tags.len()
        );
    }

    if args.keep {
        println!(
            "\nregistries keep running: primary {} ; {} ; config {}\npress Ctrl-C to stop.",
            primary.url(),
            REGIONS
                .iter()
                .zip(&replicas)
                .map(|(n, r)| format!("{n} {}", r.url()))
                .collect::<Vec<_>>()
                .join(" ; "),
            config_path.display()
        );
        tokio::signal::ctrl_c().await?;
    }
    drop(replicas);
    drop(primary);
    if temporary && !args.keep {
        remove_dir(dir);
    }
    Ok(ExitStatus::from_ok(all_good && report.ok()))
}

fn remove_dir(dir: PathBuf) {
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::warn!("could not remove {}: {e}", dir.display());
    }
}
