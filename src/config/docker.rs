//! Credentials where the container ecosystem keeps them, for registries
//! whose georep config has no `credentials`: the Docker client config
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`) — its
//! `credHelpers` (per registry) and `credsStore` (for all) through
//! `docker-credential-<name> get`, and its `auths` entries (`auth` as
//! base64 `user:password`, or `username` + `password`, or an
//! `identitytoken` for the OAuth2 refresh-token flow, or a `registrytoken`
//! sent as a bearer token).
//!
//! Looked up when the config loads; a helper is asked again when the
//! registry refuses what it gave (`registry::auth`). A problem there (an
//! unreadable file, a helper that fails) is a warning naming the file or
//! helper, and the registry is then used anonymously: registries that need
//! no credentials must not stop working because of a stray Docker config.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::Deserialize;

use super::{CredentialHelper, Credentials, Secret};

/// The user name that marks an identity (refresh) token, as Docker's
/// credential helpers return it.
const IDENTITY_TOKEN_USER: &str = "<token>";

#[derive(Debug, Default, Deserialize)]
struct File {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

/// Credentials found for a registry.
#[derive(Debug)]
pub struct Found {
    pub credentials: Credentials,
    /// Where they came from, for the log (never the secret).
    pub from: String,
    /// The helper that gave them, to ask again later.
    pub helper: Option<CredentialHelper>,
}

#[derive(Debug)]
pub struct DockerConfig {
    path: PathBuf,
    file: File,
}

/// Where the Docker config is, from `DOCKER_CONFIG` or `HOME`.
pub fn location(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    match env("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir).join("config.json")),
        None => env("HOME").map(|h| PathBuf::from(h).join(".docker").join("config.json")),
    }
}

impl DockerConfig {
    /// Reads the config at `path`; `Ok(None)` if there is none.
    pub fn load(path: &Path) -> Result<Option<DockerConfig>, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let file = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a Docker config: {e}", path.display()))?;
        Ok(Some(DockerConfig {
            path: path.to_owned(),
            file,
        }))
    }

    /// Credentials for the registry at `url`, and where they came from
    /// (for the log; never the secret).
    pub fn credentials(&self, url: &url::Url) -> Result<Option<Found>, String> {
        let host = host_key(url);
        let from_helper = |helper: &str, what: &str| {
            let h = CredentialHelper {
                helper: helper.to_owned(),
                server: host.clone(),
            };
            Ok(ask_helper(&h)?.map(|credentials| Found {
                credentials,
                from: format!("{what} docker-credential-{helper}"),
                helper: Some(h),
            }))
        };
        if let Some(helper) = find(&self.file.cred_helpers, &host) {
            return from_helper(helper, "credential helper");
        }
        if let Some(entry) = find(&self.file.auths, &host)
            && let Some(credentials) = entry_credentials(entry)
                .map_err(|e| format!("{}: auths entry for {host}: {e}", self.path.display()))?
        {
            return Ok(Some(Found {
                credentials,
                from: self.path.display().to_string(),
                helper: None,
            }));
        }
        match &self.file.creds_store {
            Some(store) => from_helper(store, "credential store"),
            None => Ok(None),
        }
    }
}

/// `host[:port]` as Docker keys registries (Docker Hub by its index URL).
fn host_key(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    let key = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    match key.as_str() {
        "registry-1.docker.io" | "docker.io" | "index.docker.io" => {
            "https://index.docker.io/v1/".to_owned()
        }
        _ => key,
    }
}

/// The entry of `map` for `host`: keys may be `host[:port]` or URLs.
fn find<'a, T>(map: &'a BTreeMap<String, T>, host: &str) -> Option<&'a T> {
    map.get(host).or_else(|| {
        map.iter()
            .find(|(k, _)| {
                let bare = k
                    .trim_start_matches("https://")
                    .trim_start_matches("http://");
                bare.split('/').next() == Some(host)
            })
            .map(|(_, v)| v)
    })
}

fn entry_credentials(e: &Entry) -> Result<Option<Credentials>, String> {
    if let Some(token) = e.registrytoken.as_ref().filter(|t| !t.is_empty()) {
        return Ok(Some(Credentials::Bearer(Secret::new(token.clone()))));
    }
    if let Some(token) = e.identitytoken.as_ref().filter(|t| !t.is_empty()) {
        return Ok(Some(Credentials::IdentityToken(Secret::new(token.clone()))));
    }
    if let (Some(u), Some(p)) = (&e.username, &e.password)
        && !u.is_empty()
    {
        return Ok(Some(Credentials::Basic {
            username: u.clone(),
            password: Secret::new(p.clone()),
        }));
    }
    let Some(auth) = e.auth.as_ref().filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| "`auth` is not base64".to_owned())?;
    let text = String::from_utf8(raw).map_err(|_| "`auth` is not UTF-8".to_owned())?;
    let (u, p) = text
        .split_once(':')
        .ok_or_else(|| "`auth` is not user:password".to_owned())?;
    Ok(Some(Credentials::Basic {
        username: u.to_owned(),
        password: Secret::new(p.to_owned()),
    }))
}

/// `docker-credential-<helper> get`, the server on stdin; `None` when the
/// helper has nothing for it. Blocks while the helper runs.
pub fn ask_helper(h: &CredentialHelper) -> Result<Option<Credentials>, String> {
    let (helper, server) = (&h.helper, &h.server);
    #[derive(Deserialize)]
    struct Answer {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let said = if said.is_empty() {
            String::from_utf8_lossy(&out.stderr).trim().to_owned()
        } else {
            said
        };
        if said.contains("credentials not found") {
            return Ok(None);
        }
        return Err(format!("{program} get {server}: {} ({said})", out.status));
    }
    let a: Answer = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{program} get {server}: not a credentials answer: {e}"))?;
    let secret = Secret::new(a.secret);
    Ok(Some(if a.username == IDENTITY_TOKEN_USER {
        Credentials::IdentityToken(secret)
    } else {
        Credentials::Basic {
            username: a.username,
            password: secret,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> DockerConfig {
        DockerConfig {
            path: "config.json".into(),
            file: serde_json::from_str(json).unwrap(),
        }
    }

    fn creds(c: &DockerConfig, url: &str) -> Option<Credentials> {
        c.credentials(&url::Url::parse(url).unwrap())
            .unwrap()
            .map(|f| f.credentials)
    }

    fn basic(u: &str, p: &str) -> Option<Credentials> {
        Some(Credentials::Basic {
            username: u.into(),
            password: Secret::new(p),
        })
    }

    #[test]
    fn auths_entries_by_host_or_url() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let c = config(&format!(
            r#"{{"auths": {{
                "127.0.0.1:5000": {{"auth": "{b64}"}},
                "https://r.example.com/v1/": {{"username": "bob", "password": "pw"}},
                "tok.example.com": {{"identitytoken": "refresh-me"}},
                "reg.example.com": {{"registrytoken": "use-me"}},
                "https://index.docker.io/v1/": {{"auth": "{b64}"}},
                "empty.example.com": {{}}
            }}}}"#
        ));
        assert_eq!(
            creds(&c, "http://127.0.0.1:5000/"),
            basic("alice", "s3cret")
        );
        assert_eq!(creds(&c, "https://r.example.com/"), basic("bob", "pw"));
        assert_eq!(
            creds(&c, "https://tok.example.com/"),
            Some(Credentials::IdentityToken(Secret::new("refresh-me")))
        );
        assert_eq!(
            creds(&c, "https://reg.example.com/"),
            Some(Credentials::Bearer(Secret::new("use-me")))
        );
        assert_eq!(
            creds(&c, "https://registry-1.docker.io/"),
            basic("alice", "s3cret")
        );
        assert_eq!(creds(&c, "https://empty.example.com/"), None);
        assert_eq!(creds(&c, "http://127.0.0.1:5001/"), None);
    }

    #[test]
    fn a_bad_auth_entry_is_named() {
        let c = config(r#"{"auths": {"h": {"auth": "%%%"}}}"#);
        let e = c
            .credentials(&url::Url::parse("https://h/").unwrap())
            .unwrap_err();
        assert!(
            e.contains("auths entry for h") && e.contains("not base64"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_helper_is_an_error_naming_it() {
        let c = config(r#"{"credHelpers": {"h": "georep-no-such-helper"}}"#);
        let e = c
            .credentials(&url::Url::parse("https://h/").unwrap())
            .unwrap_err();
        assert!(e.contains("docker-credential-georep-no-such-helper"), "{e}");
    }
}
