//! `georep bench`: throughput of georep against a raw baseline and skopeo,
//! side by side (see [`crate::lab::bench::runner`]), plus its two internal
//! helpers, `bench-child` and `bench-exec`.

use anyhow::{Context as _, bail};

use crate::cli::{BenchArgs, BenchChildArgs, BenchExecArgs};
use crate::commands::ExitStatus;
use crate::lab::bench::runner::{self, BenchOptions};
use crate::lab::corpus::{CorpusSpec, Preset};

pub async fn run(args: &BenchArgs) -> anyhow::Result<ExitStatus> {
    let (spec, custom) = corpus_spec(args)?;
    if args.regions == 0 {
        bail!("--regions must be at least 1");
    }
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if args.sweep.contains(&0) || args.concurrency == Some(0) {
        bail!("concurrency levels must be at least 1");
    }
    if let Some(c) = &args.config
        && !c.exists()
    {
        bail!("config file {} does not exist", c.display());
    }
    let levels = match args.concurrency {
        Some(c) => vec![c],
        None => args.sweep.clone(),
    };
    let preset_name = format!("{:?}", args.preset).to_lowercase();
    let opts = BenchOptions {
        georep: std::env::current_exe().context("locating the georep binary")?,
        corpus_name: if custom {
            format!("custom (from {preset_name})")
        } else {
            preset_name
        },
        spec,
        config: args.config.clone(),
        regions: args.regions,
        port_base: args.port_base,
        dir: args.dir.clone(),
        keep: args.keep,
        levels,
        rounds: args.rounds,
        skopeo: args.skopeo,
        read_back: !args.quick_verify,
        progress: args.progress,
    };
    let report = runner::run(&opts).await?;
    if let Some(path) = &args.svg {
        let svg = crate::lab::bench::output::svg(&report)?;
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("chart written to {}", path.display());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", crate::lab::bench::output::render(&report));
    }
    Ok(ExitStatus::from_ok(report.ok()))
}

/// The preset's corpus with the explicit knobs applied; `true` if any was.
fn corpus_spec(args: &BenchArgs) -> anyhow::Result<(CorpusSpec, bool)> {
    if matches!(args.preset, Preset::Demo | Preset::Test) {
        bail!("--preset must be small, medium or large");
    }
    let mut spec = CorpusSpec::preset(args.preset, args.seed);
    let mut custom = false;
    if let Some(n) = args.repositories {
        if n == 0 {
            bail!("--repositories must be at least 1");
        }
        spec.repositories = crate::lab::corpus::bench_repositories(n);
        custom = true;
    }
    let mut set = |field: &mut usize, v: Option<usize>| {
        if let Some(v) = v {
            *field = v;
            custom = true;
        }
    };
    set(&mut spec.tags_per_repository, args.tags);
    set(&mut spec.layers_per_image, args.layers);
    set(&mut spec.base_layers, args.base_layers);
    set(&mut spec.big_layers, args.big_layers);
    set(&mut spec.multi_arch_every, args.multi_arch_every);
    for (flag, value, field) in [
        ("--layer-size", &args.layer_size, &mut spec.layer_bytes),
        (
            "--base-layer-size",
            &args.base_layer_size,
            &mut spec.base_layer_bytes,
        ),
        (
            "--big-layer-size",
            &args.big_layer_size,
            &mut spec.big_layer_bytes,
        ),
    ] {
        if let Some(v) = value {
            *field = size_range(v).map_err(|e| anyhow::anyhow!("{flag} {v:?}: {e}"))?;
            custom = true;
        }
    }
    if spec.tags_per_repository == 0 {
        bail!("--tags must be at least 1");
    }
    Ok((spec, custom))
}

/// `SIZE` or `MIN..MAX` as a half-open byte range.
fn size_range(text: &str) -> Result<(u64, u64), String> {
    match text.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (crate::config::parse_size(a)?, crate::config::parse_size(b)?);
            if b < a {
                return Err("the maximum is below the minimum".to_owned());
            }
            Ok((a, b))
        }
        None => {
            let n = crate::config::parse_size(text)?;
            Ok((n, n))
        }
    }
}

/// `georep bench-child --plan F`.
pub async fn child(args: &BenchChildArgs) -> anyhow::Result<ExitStatus> {
    let result = crate::lab::bench::child::run(&args.plan).await?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(ExitStatus::Success)
}

/// `georep bench-exec --out F -- CMD...`: exits as the command did.
pub fn exec(args: &BenchExecArgs) -> anyhow::Result<ExitStatus> {
    let usage = crate::lab::bench::child::exec(&args.out, &args.command)?;
    Ok(match usage.exit_code {
        Some(0) => ExitStatus::Success,
        Some(c) => u8::try_from(c).map_or(ExitStatus::Failure, ExitStatus::External),
        // Killed by a signal.
        None => ExitStatus::Failure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_ranges() {
        assert_eq!(size_range("1MiB..2MiB").unwrap(), (1 << 20, 2 << 20));
        assert_eq!(size_range("512MiB").unwrap(), (512 << 20, 512 << 20));
        assert!(size_range("2MiB..1MiB").is_err());
        assert!(size_range("lots").is_err());
    }
}
