//! `georep notify test TARGET`: posts a sample event to one outgoing
//! notification target, as the daemon would (format, credentials, timeout),
//! and says what came back: the way to check a chat hook or a CD trigger
//! before a real push depends on it.

use crate::cli::NotifyTestArgs;
use crate::commands::ExitStatus;
use crate::config::NotifyEvent;
use crate::notify::{Delivery, Notification, display_url, post, render};

pub async fn test(args: &NotifyTestArgs) -> anyhow::Result<ExitStatus> {
    let config = crate::config::load(&args.config)?;
    let targets = &config.daemon.notify;
    let Some(t) = targets.iter().find(|t| {
        t.name == args.target
            || t.url.as_str().trim_end_matches('/') == args.target.trim_end_matches('/')
    }) else {
        let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        anyhow::bail!(
            "{} has no notify target {:?}{}",
            config.path.display(),
            args.target,
            if names.is_empty() {
                " (it has no `notify:` section)".to_owned()
            } else {
                format!("; its targets are: {}", names.join(", "))
            }
        );
    };
    let Some(event) = NotifyEvent::parse(&args.event) else {
        anyhow::bail!(
            "--event must be one of {}, not {:?}",
            NotifyEvent::ALL.map(NotifyEvent::as_str).join(", "),
            args.event
        );
    };
    let body = render(&Notification::sample(event), t.format);
    let http = reqwest::Client::new();
    let url = display_url(&t.url);
    match post(&http, t, &body).await {
        Delivery::Sent => {
            println!(
                "{}: a sample `{}` event was delivered to {url}",
                t.name,
                event.as_str()
            );
            Ok(ExitStatus::Success)
        }
        Delivery::Refused(why) => {
            eprintln!("{}: refused (the daemon would not retry it): {why}", t.name);
            Ok(ExitStatus::Failure)
        }
        Delivery::Failed(why) => {
            eprintln!(
                "{}: not delivered (the daemon would retry it): {why}",
                t.name
            );
            Ok(ExitStatus::Failure)
        }
    }
}
