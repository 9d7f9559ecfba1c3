//! `georep sync`: one replication pass, a report, an exit code.

use anyhow::Context;

use crate::cli::{LogFormat, SyncArgs};
use crate::commands::ExitStatus;
use crate::engine::{Engine, SyncOptions, store_path};
use crate::progress::ProgressMode;

pub async fn run(args: &SyncArgs, log_format: LogFormat) -> anyhow::Result<ExitStatus> {
    // A dry run writes nothing, not even a state directory.
    let config = if args.dry_run {
        crate::config::load(&args.config)?
    } else {
        super::load_with_state_dir(&args.config)?
    };
    if args.rebuild_state {
        let path = store_path(&config);
        // Never move a store another georep is writing to.
        if let Err(e @ crate::store::StoreError::Busy { .. }) = Engine::open_store(&config) {
            return Err(e.into());
        }
        if path.exists() {
            let aside = path.with_file_name(format!("store.broken-{}", crate::store::now_unix()));
            std::fs::rename(&path, &aside).with_context(|| {
                format!(
                    "moving the state store {} aside to {}",
                    path.display(),
                    aside.display()
                )
            })?;
            eprintln!(
                "moved the state store aside to {}; rebuilding it from the registries",
                aside.display()
            );
        }
    }
    let store = if args.dry_run && !store_path(&config).exists() {
        // Nothing recorded yet: plan on a store that leaves nothing behind.
        Engine::temporary_store(&config)?
    } else {
        Engine::open_store(&config)?
    };
    let engine = Engine::new(&config, store);
    let pass = engine.sync(SyncOptions {
        verify: args.verify || args.rebuild_state,
        dry_run: args.dry_run,
    });
    // JSON logs are for collectors: progress lines would break them.
    let progress = match (args.progress, log_format) {
        (ProgressMode::Auto, LogFormat::Json) => ProgressMode::None,
        (m, _) => m,
    };
    let report = crate::progress::sync_progress(&engine, progress, pass).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
        if args.dry_run && !report.tags.is_empty() {
            print!("\n{}", report.render_tags());
            if report.tags_not_detailed > 0 {
                println!("(and {} more tag results)", report.tags_not_detailed);
            }
        }
    }
    Ok(ExitStatus::from_ok(report.ok()))
}
