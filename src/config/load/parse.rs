//! Parsing the YAML into the file's shape with every problem found, not
//! just the first: the parser stops at its first error, so the line it
//! names (and the lines nested under it) is masked and the file parsed
//! again, until it parses or nothing new turns up. Each error is said in
//! plain words, with a suggestion for a misspelled or misplaced key.

use serde_saphyr::Location;

use super::super::file::FileConfig;
use super::Issue;

/// Errors collected at most (a file that is not YAML at all stops early).
const MAX_ERRORS: usize = 20;

/// Every key of the file, by section (`""`: the top level), for
/// suggestions. `tests` checks it against `config/example.yaml`.
pub const KEYS: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "state_dir",
            "mode",
            "primary",
            "regions",
            "conflicts",
            "repositories",
            "concurrency",
            "timeouts",
            "retries",
            "limits",
            "listen",
            "poll_interval_secs",
            "audit_interval_secs",
            "shutdown_grace_secs",
            "retry_max_secs",
            "park_after_attempts",
            "webhook",
            "api",
            "deletes",
            "notify",
            "cluster",
        ],
    ),
    (
        "primary / regions[]",
        &[
            "name",
            "url",
            "credentials",
            "max_concurrent_requests",
            "max_requests_per_sec",
            "max_bytes_per_sec",
            "tls",
            "insecure",
            "accepts_pushes",
            "webhook_auth",
        ],
    ),
    ("conflicts", &["order", "skew_ms"]),
    (
        "credentials",
        &[
            "username",
            "password_env",
            "password_file",
            "token_env",
            "token_file",
            "identity_token_env",
            "identity_token_file",
        ],
    ),
    ("tls", &["ca_file", "client_cert_file", "client_key_file"]),
    ("repositories", &["include", "exclude"]),
    (
        "concurrency",
        &[
            "max_concurrent_images",
            "max_concurrent_blobs",
            "max_concurrent_blobs_per_region",
        ],
    ),
    ("timeouts", &["connect_secs", "request_secs", "stall_secs"]),
    ("retries", &["max_attempts"]),
    (
        "limits",
        &[
            "max_requests_per_sec",
            "max_bytes_per_sec",
            "total_max_bytes_per_sec",
        ],
    ),
    ("webhook", &["max_body_bytes", "auth"]),
    ("api", &["auth"]),
    (
        "webhook.auth / api.auth / regions[].webhook_auth",
        &[
            "bearer_token_env",
            "bearer_token_file",
            "username",
            "password_env",
            "password_file",
        ],
    ),
    ("deletes", &["policy", "max_per_hour", "dry_run"]),
    (
        "cluster",
        &[
            "etcd",
            "prefix",
            "instance_id",
            "advertise_url",
            "lease_ttl_secs",
        ],
    ),
    (
        "cluster.etcd",
        &[
            "endpoints",
            "username",
            "password_env",
            "password_file",
            "tls",
        ],
    ),
    (
        "notify[]",
        &[
            "name",
            "url",
            "events",
            "scope",
            "format",
            "bearer_token_env",
            "timeout_secs",
        ],
    ),
];

/// Parses `text`: the file's shape (with the lines that did not parse
/// masked, so the rest can still be checked) and every problem the parser
/// found, each once.
pub fn parse(text: &str) -> (Option<FileConfig>, Vec<Issue>) {
    let mut masked = text.to_owned();
    let mut issues: Vec<Issue> = Vec::new();
    let mut masked_lines: Vec<usize> = Vec::new();
    loop {
        match serde_saphyr::from_str::<FileConfig>(&masked) {
            Ok(file) => return (Some(file), issues),
            Err(e) => {
                let Some(at) = e.location() else {
                    issues.push(issue(text, None, plain(&e, text)));
                    return (None, issues);
                };
                let line = at.line() as usize;
                // A key missing, or a section left empty, because lines
                // were masked is no news.
                let caused_by_mask = !masked_lines.is_empty()
                    && (matches!(strip(&e), serde_saphyr::Error::SerdeMissingField { .. })
                        || emptied(&masked, line));
                if !caused_by_mask {
                    issues.push(issue(text, Some(at), plain(&e, text)));
                }
                let missing = matches!(strip(&e), serde_saphyr::Error::SerdeMissingField { .. });
                if line == 0
                    || masked_lines.contains(&line)
                    || issues.len() >= MAX_ERRORS
                    || (caused_by_mask && missing)
                {
                    return (None, issues);
                }
                masked = mask(&masked, line);
                masked_lines.push(line);
            }
        }
    }
}

/// The error inside its snippet wrapper.
fn strip(e: &serde_saphyr::Error) -> &serde_saphyr::Error {
    match e {
        serde_saphyr::Error::WithSnippet { error, .. } => strip(error),
        other => other,
    }
}

/// Whether line `line` of `masked` opens a block whose every nested line
/// was masked: an error there is the masking's doing.
fn emptied(masked: &str, line: usize) -> bool {
    let lines: Vec<&str> = masked.lines().collect();
    let Some(first) = lines.get(line.saturating_sub(1)) else {
        return false;
    };
    let indent = |l: &str| l.len() - l.trim_start_matches([' ', '-']).len();
    let base = indent(first);
    let mut nested = lines[line..]
        .iter()
        .take_while(|l| **l == "#" || l.trim().is_empty() || indent(l) > base);
    nested.clone().next().is_some() && nested.all(|l| *l == "#" || l.trim().is_empty())
}

fn issue(text: &str, at: Option<Location>, message: String) -> Issue {
    let (line, column) = at.map_or((0, 0), |a| (a.line(), a.column()));
    Issue {
        line,
        column,
        source_line: text
            .lines()
            .nth(line.saturating_sub(1) as usize)
            .unwrap_or("")
            .to_owned(),
        message,
    }
}

/// `text` with line `line` (1-based) and the lines nested under it made
/// comments, so the rest parses as it would have.
fn mask(text: &str, line: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let Some(first) = lines.get(line.saturating_sub(1)) else {
        return text.to_owned();
    };
    let indent = |l: &str| l.len() - l.trim_start_matches([' ', '-']).len();
    let base = indent(first);
    let mut out = Vec::with_capacity(lines.len());
    let mut inside = false;
    for (i, l) in lines.iter().enumerate() {
        let n = i + 1;
        if n == line {
            inside = true;
            // Keep a list item's dash, so the list keeps its shape.
            let dash = l.trim_start().starts_with('-');
            out.push(if dash {
                format!("{}- {{}}", " ".repeat(l.len() - l.trim_start().len()))
            } else {
                "#".to_owned()
            });
            continue;
        }
        if inside && (l.trim().is_empty() || indent(l) > base) {
            out.push("#".to_owned());
            continue;
        }
        inside = false;
        out.push((*l).to_owned());
    }
    out.join("\n")
}

/// The parser's message in plain words (the place is said by the issue).
fn plain(e: &serde_saphyr::Error, text: &str) -> String {
    use serde_saphyr::Error as E;
    match e {
        E::WithSnippet { error, .. } => plain(error, text),
        E::SerdeUnknownField {
            field, expected, ..
        } => format!("unknown key `{field}`{}", suggest(field, expected)),
        E::SerdeMissingField { field, .. } => format!("`{field}` is required here"),
        E::SerdeInvalidType {
            unexpected,
            expected,
            ..
        }
        | E::SerdeInvalidValue {
            unexpected,
            expected,
            ..
        } => format!("expected {}, not {}", kind(expected), got_text(unexpected)),
        E::InvalidScalar { ty, location } => {
            let value = value_at(text, *location);
            format!("expected {}, not {value}", kind(ty))
        }
        other => serde_saphyr::MessageFormatter::format_message(
            &serde_saphyr::DefaultMessageFormatter,
            other,
        )
        .into_owned(),
    }
}

/// The scalar written at `at`: the rest of its line, without a comment.
fn value_at(text: &str, at: Location) -> String {
    let line = text
        .lines()
        .nth(at.line().saturating_sub(1) as usize)
        .unwrap_or("");
    let rest: String = line
        .chars()
        .skip(at.column().saturating_sub(1) as usize)
        .collect();
    let rest = rest.split(" #").next().unwrap_or("").trim();
    if rest.is_empty() {
        "nothing".to_owned()
    } else {
        format!("{rest:?}")
    }
}

/// What serde calls a type, as a person would.
fn kind(want: &str) -> String {
    match want.trim() {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number (0 or more)".to_owned(),
        "i32" | "i64" => "a whole number".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "a boolean" | "bool" => "true or false".to_owned(),
        "a string" => "text".to_owned(),
        "a sequence" => "a list (`- item` lines, or `[a, b]`)".to_owned(),
        "struct FileConfig" | "a map" => "a section of `key: value` lines".to_owned(),
        w if w.starts_with("struct ") => "a section of `key: value` lines".to_owned(),
        w => w.to_owned(),
    }
}

/// serde's `string "four"`, `integer \`-5\``, … as the value written.
fn got_text(got: &str) -> String {
    let got = got.trim();
    for prefix in [
        "string ",
        "integer ",
        "floating point ",
        "boolean ",
        "unsigned integer ",
    ] {
        if let Some(v) = got.strip_prefix(prefix) {
            return v.trim_matches('`').to_owned();
        }
    }
    got.to_owned()
}

/// ` — did you mean …?` for a key that is close to one expected here, or
/// to one of another section (misplaced).
pub fn suggest(field: &str, expected: &[&str]) -> String {
    let close = |k: &str| distance(field, k) <= (field.len() / 4).max(2);
    if let Some(k) = expected.iter().copied().min_by_key(|k| distance(field, k))
        && close(k)
    {
        return format!(": did you mean `{k}`?");
    }
    // Elsewhere: the same key first, else the closest.
    let elsewhere = KEYS
        .iter()
        .flat_map(|(section, keys)| keys.iter().map(move |k| (*section, *k)))
        .filter(|(_, k)| !expected.contains(k))
        .min_by_key(|(_, k)| distance(field, k));
    if let Some((section, k)) = elsewhere
        && close(k)
    {
        let place = if section.is_empty() {
            "at the top level".to_owned()
        } else {
            format!("under `{section}:`")
        };
        return format!(": did you mean `{k}` ({place})?");
    }
    if expected.is_empty() {
        String::new()
    } else {
        format!(" (keys here: {})", expected.join(", "))
    }
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_found_and_said_plainly() {
        let text = "state_dir: s\nprimary:\n  name: p\n  url: http://h:5000\nregions:\n  - name: r\n    url: http://h:5001\n\
                    concurrency:\n  max_concurrent_images: four\n  max_concurent_blobs: 4\nmax_concurrent_images: 3\n";
        let (file, issues) = parse(text);
        assert!(file.is_some(), "the rest parses");
        let said: Vec<(u64, &str)> = issues
            .iter()
            .map(|i| (i.line, i.message.as_str()))
            .collect();
        assert_eq!(
            said,
            vec![
                (9, "expected a whole number (0 or more), not \"four\""),
                (
                    10,
                    "unknown key `max_concurent_blobs`: did you mean `max_concurrent_blobs`?"
                ),
                (
                    11,
                    "unknown key `max_concurrent_images`: did you mean `max_concurrent_images` (under `concurrency:`)?"
                ),
            ]
        );
    }

    #[test]
    fn suggestions_name_the_closest_key_or_its_section() {
        assert_eq!(
            suggest("polcy", &["policy", "dry_run"]),
            ": did you mean `policy`?"
        );
        assert_eq!(
            suggest("dry_run", &["state_dir"]),
            ": did you mean `dry_run` (under `deletes:`)?"
        );
        assert_eq!(suggest("zzz", &["a", "b"]), " (keys here: a, b)");
        assert_eq!(got_text("integer `-5`"), "-5");
        assert_eq!(kind("u32"), "a whole number (0 or more)");
    }

    #[test]
    fn every_key_of_the_example_is_known() {
        let example = include_str!("../../../config/example.yaml");
        let known: Vec<&str> = KEYS.iter().flat_map(|(_, k)| k.iter().copied()).collect();
        // Every key the example sets (uncommented) is in the table.
        for line in example.lines().filter(|l| !l.trim_start().starts_with('#')) {
            let l = line.trim_start_matches([' ', '-']).trim_start();
            if let Some((key, _)) = l.split_once(':')
                && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                && !key.is_empty()
            {
                assert!(
                    known.contains(&key),
                    "config/example.yaml sets `{key}`, missing from KEYS"
                );
            }
        }
    }

    #[test]
    fn a_masked_key_takes_its_nested_lines_with_it() {
        let text = "a: 1\nbad:\n  x: 1\n  y: 2\nc: 3\nlist:\n  - name: q\n    wrong: 1\n";
        assert_eq!(
            mask(text, 2),
            "a: 1\n#\n#\n#\nc: 3\nlist:\n  - name: q\n    wrong: 1"
        );
        assert_eq!(
            mask(text, 8),
            "a: 1\nbad:\n  x: 1\n  y: 2\nc: 3\nlist:\n  - name: q\n#"
        );
    }
}
