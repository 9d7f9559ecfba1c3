//! How georep reaches each registry, and who may reach georep, as the
//! loader validates them: URLs (no userinfo, no plain http beyond loopback
//! unless `insecure`), TLS material (read, and a client built and kept),
//! credentials from the file, the environment or the Docker config, and
//! the daemon's own HTTP auth.

use std::path::PathBuf;

use serde_saphyr::{Location, Spanned};

use super::Validator;
use crate::config::file::{FileCredentials, FileHttpAuth, FileRegistry, FileTls};
use crate::config::{
    Credentials, DEFAULT_MAX_CONCURRENT_REQUESTS, HttpAuth, RegistryConfig, Secret, Tls,
};

/// A loopback host (`localhost`, 127.0.0.0/8, `::1`): plain http to it
/// never leaves the machine.
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl Validator<'_> {
    pub(super) fn registry(&mut self, r: &FileRegistry, role: &str) -> Option<RegistryConfig> {
        let name = r.name.value.trim();
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !name_ok {
            self.issue(
                r.name.referenced,
                format!(
                    "{role} name {:?} must be 1-64 letters, digits, '-', '_' or '.'",
                    r.name.value
                ),
            );
        }
        let url = self.url(&r.url);
        let (credentials, credential_helper) = match (&r.credentials, &url) {
            (Some(c), _) => (self.credentials(c), None),
            (None, Some(u)) => match self.docker_credentials(name, u) {
                Some(found) => (Some(found.credentials), found.helper),
                None => (None, None),
            },
            (None, None) => (None, None),
        };
        let max_concurrent_requests = self.positive(
            &r.max_concurrent_requests,
            "max_concurrent_requests",
            DEFAULT_MAX_CONCURRENT_REQUESTS,
        );
        let max_requests_per_sec = match &r.max_requests_per_sec {
            Some(_) => Some(self.positive(&r.max_requests_per_sec, "max_requests_per_sec", 1)),
            None => self.default_requests_per_sec,
        };
        let max_bytes_per_sec = match &r.max_bytes_per_sec {
            Some(v) => self.size(v, "max_bytes_per_sec"),
            None => self.default_bytes_per_sec,
        };
        let insecure = r.insecure.as_ref().is_some_and(|i| i.value);
        let tls = r.tls.as_ref().and_then(|t| self.tls(t)).unwrap_or_default();
        let url = url?;
        if url.scheme() == "http" {
            if let Some(t) = &r.tls {
                self.issue(
                    t.referenced,
                    format!(
                        "tls settings need an https:// URL, not {}",
                        r.url.value.trim()
                    ),
                );
            }
            if !insecure && !is_loopback(&url) {
                self.issue(
                    r.url.referenced,
                    format!(
                        "{} is plain http to a host that is not loopback: credentials and images would cross the network in clear text; use https://, or set `insecure: true` on this registry if that is really meant",
                        r.url.value.trim()
                    ),
                );
            }
        }
        // The client must build with this material (a key that does not
        // match its certificate, say): find out now, with a line number,
        // and keep it.
        let client = match crate::http::client_with_tls(
            tls.settings(insecure, &url),
            self.connect_timeout,
        ) {
            Ok(client) => client,
            Err(e) => {
                let at = r.tls.as_ref().map_or(r.url.referenced, |t| t.referenced);
                self.issue(at, format!("TLS settings of {role} {name:?}: {e}"));
                return None;
            }
        };
        // Configured, but its secret not loaded (`load_without_secrets`).
        let credentials_withheld = r.credentials.is_some() && credentials.is_none();
        let webhook_auth = r
            .webhook_auth
            .as_ref()
            .and_then(|a| self.http_auth(a, &format!("webhook_auth of {role} {name:?}")));
        Some(RegistryConfig {
            name: name.to_owned(),
            url,
            credentials,
            credentials_withheld,
            credential_helper,
            max_concurrent_requests,
            max_requests_per_sec,
            max_bytes_per_sec,
            insecure,
            // The mode decides (see `Validator::mode`).
            accepts_pushes: false,
            webhook_auth,
            client,
        })
    }

    /// Credentials for a registry with none in this file, from the Docker
    /// config (`docker::DockerConfig`); problems there are warnings.
    pub(super) fn docker_credentials(
        &mut self,
        name: &str,
        url: &url::Url,
    ) -> Option<crate::config::docker::Found> {
        if self.docker.is_none() {
            let loaded = match crate::config::docker::location(self.env) {
                Some(path) => crate::config::docker::DockerConfig::load(&path),
                None => Ok(None),
            };
            self.docker = Some(loaded.unwrap_or_else(|e| {
                tracing::warn!("ignoring the Docker config: {e}");
                None
            }));
        }
        let docker = self.docker.as_ref()?.as_ref()?;
        match docker.credentials(url) {
            Ok(Some(found)) => {
                tracing::debug!(registry = name, "credentials from {}", found.from);
                Some(found)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(
                    registry = name,
                    "no credentials from the Docker config: {e}"
                );
                None
            }
        }
    }

    /// Reads and checks the files of a `tls:` block.
    pub(super) fn tls(&mut self, t: &Spanned<FileTls>) -> Option<Tls> {
        let mut out = Tls::default();
        let read = |this: &mut Self, f: &Spanned<PathBuf>, key: &str| {
            let p = this.absolute(&f.value);
            match std::fs::read(&p) {
                Ok(b) => Some(b),
                Err(e) => {
                    this.issue(
                        f.referenced,
                        format!("cannot read {key} {}: {e}", p.display()),
                    );
                    None
                }
            }
        };
        if let Some(f) = &t.value.ca_file {
            let pem = read(self, f, "ca_file")?;
            match reqwest::Certificate::from_pem_bundle(&pem) {
                Ok(certs) if !certs.is_empty() => out.ca_pem = Some(pem),
                Ok(_) => {
                    self.issue(f.referenced, "ca_file holds no PEM certificate");
                    return None;
                }
                Err(e) => {
                    self.issue(
                        f.referenced,
                        format!("ca_file is not a PEM certificate bundle: {e}"),
                    );
                    return None;
                }
            }
        }
        match (&t.value.client_cert_file, &t.value.client_key_file) {
            (Some(c), Some(k)) => {
                let mut pem = read(self, c, "client_cert_file")?;
                let key = read(self, k, "client_key_file")?;
                pem.push(b'\n');
                pem.extend_from_slice(&key);
                if let Err(e) = reqwest::Identity::from_pem(&pem) {
                    self.issue(
                        c.referenced,
                        format!("client_cert_file and client_key_file do not form a client identity: {e}"),
                    );
                    return None;
                }
                out.identity_pem = Some(Secret::new(String::from_utf8_lossy(&pem).into_owned()));
            }
            (Some(c), None) => {
                self.issue(c.referenced, "client_cert_file needs client_key_file");
                return None;
            }
            (None, Some(k)) => {
                self.issue(k.referenced, "client_key_file needs client_cert_file");
                return None;
            }
            (None, None) => {}
        }
        Some(out)
    }

    pub(super) fn url(&mut self, s: &Spanned<String>) -> Option<url::Url> {
        let raw = s.value.trim();
        let url = match url::Url::parse(raw) {
            Ok(u) => u,
            Err(e) => {
                self.issue(
                    s.referenced,
                    format!(
                        "invalid URL {raw:?}: {e} (expected e.g. https://registry.example.com)"
                    ),
                );
                return None;
            }
        };
        if url.scheme() != "http" && url.scheme() != "https" {
            self.issue(
                s.referenced,
                format!("URL {raw:?} must start with http:// or https://"),
            );
            return None;
        }
        if !url.username().is_empty() || url.password().is_some() {
            // Do not echo the URL: it holds a secret.
            self.issue(
                s.referenced,
                "a registry URL must not contain a username or password: use `credentials` with password_env or password_file",
            );
            return None;
        }
        if url.query().is_some() || url.fragment().is_some() {
            self.issue(
                s.referenced,
                format!("URL {raw:?} must not have a query or fragment"),
            );
            return None;
        }
        if url.host_str().is_none() {
            self.issue(s.referenced, format!("URL {raw:?} has no host"));
            return None;
        }
        Some(crate::config::base_url(url))
    }

    /// `webhook.auth` or `api.auth` (`what`): a bearer token, or a username
    /// with a password.
    pub(super) fn http_auth(&mut self, a: &Spanned<FileHttpAuth>, what: &str) -> Option<HttpAuth> {
        let at = a.referenced;
        let a = &a.value;
        let bearer = a.bearer_token_env.is_some() || a.bearer_token_file.is_some();
        match (&a.username, bearer) {
            (Some(_), true) => {
                self.issue(
                    at,
                    format!(
                        "{what}: give either a bearer token or a username and password, not both"
                    ),
                );
                None
            }
            (Some(username), false) => {
                let password = self.secret(
                    &a.password_env,
                    &a.password_file,
                    at,
                    &format!("{what} with a username"),
                    "password",
                )?;
                Some(HttpAuth::Basic {
                    username: username.clone(),
                    password,
                })
            }
            (None, _) => {
                if let Some(p) = a
                    .password_env
                    .as_ref()
                    .map(|p| p.referenced)
                    .or(a.password_file.as_ref().map(|p| p.referenced))
                {
                    self.issue(p, format!("{what}: a password needs a username"));
                    return None;
                }
                self.secret(
                    &a.bearer_token_env,
                    &a.bearer_token_file,
                    at,
                    what,
                    "bearer_token",
                )
                .map(HttpAuth::Bearer)
            }
        }
    }

    /// Exactly one of: `username` with a password, a bearer `token_*`, an
    /// `identity_token_*`.
    pub(super) fn credentials(&mut self, c: &Spanned<FileCredentials>) -> Option<Credentials> {
        let at = c.referenced;
        let c = &c.value;
        let token = c.token_env.is_some() || c.token_file.is_some();
        let identity = c.identity_token_env.is_some() || c.identity_token_file.is_some();
        let password = c.password_env.is_some() || c.password_file.is_some();
        let basic = c.username.is_some() || password;
        if [basic, token, identity].iter().filter(|k| **k).count() != 1 {
            self.issue(
                at,
                "credentials need exactly one of: username with password_env or password_file; token_env or token_file (a bearer token); identity_token_env or identity_token_file (an OAuth2 refresh token)",
            );
            return None;
        }
        if token {
            let t = self.secret(&c.token_env, &c.token_file, at, "a bearer token", "token")?;
            return Some(Credentials::Bearer(t));
        }
        if identity {
            let t = self.secret(
                &c.identity_token_env,
                &c.identity_token_file,
                at,
                "an identity token",
                "identity_token",
            )?;
            return Some(Credentials::IdentityToken(t));
        }
        let Some(username) = &c.username else {
            self.issue(at, "credentials with a password need a username");
            return None;
        };
        let what = format!("credentials for {:?}", username.value);
        let password = self.secret(&c.password_env, &c.password_file, at, &what, "password")?;
        if username.value.is_empty() {
            self.issue(
                username.referenced,
                "credentials.username must not be empty",
            );
            return None;
        }
        Some(Credentials::Basic {
            username: username.value.clone(),
            password,
        })
    }

    /// A secret from exactly one of `<name>_env` (a variable) and
    /// `<name>_file` (a file, trailing newline removed).
    pub(super) fn secret(
        &mut self,
        env: &Option<Spanned<String>>,
        file: &Option<Spanned<PathBuf>>,
        at: Location,
        what: &str,
        name: &str,
    ) -> Option<Secret> {
        match (env, file) {
            (Some(_), Some(f)) => {
                self.issue(
                    f.referenced,
                    format!("give either {name}_env or {name}_file, not both"),
                );
                None
            }
            (None, None) => {
                self.issue(at, format!("{what} need {name}_env or {name}_file"));
                None
            }
            (Some(var), None) => match (self.env)(&var.value) {
                Some(p) => Some(Secret::new(p)),
                None if !self.secrets_required => None,
                None => {
                    self.issue(
                        var.referenced,
                        format!("environment variable {} is not set", var.value),
                    );
                    None
                }
            },
            (None, Some(file)) => {
                let p = self.absolute(&file.value);
                match std::fs::read_to_string(&p) {
                    Ok(s) => Some(Secret::new(s.trim_end_matches(['\r', '\n']))),
                    Err(_) if !self.secrets_required => None,
                    Err(e) => {
                        self.issue(
                            file.referenced,
                            format!("cannot read {name}_file {}: {e}", p.display()),
                        );
                        None
                    }
                }
            }
        }
    }
}

/// Two URLs name the same registry when scheme, host, port and path agree.
pub(super) fn url_identity(u: &url::Url) -> String {
    format!(
        "{}://{}:{}{}",
        u.scheme(),
        u.host_str().unwrap_or("").to_ascii_lowercase(),
        u.port_or_known_default().unwrap_or(0),
        u.path().trim_end_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::super::load_str;
    use super::super::tests::{MINIMAL, load_err};
    use crate::config::{Credentials, Secret};
    use std::path::Path;

    #[test]
    fn url_with_password_is_refused_without_echo() {
        let text = MINIMAL.replace("http://127.0.0.1:5001", "http://bob:hunter2@127.0.0.1:5001");
        let err = load_err(&text);
        assert!(err.contains(":7:10:"), "{err}");
        assert!(!err.contains("hunter2") || err.contains("| "), "{err}");
        let message_line = err.lines().find(|l| l.contains(":7:10:")).unwrap();
        assert!(!message_line.contains("hunter2"), "{message_line}");
    }

    #[test]
    fn credentials_from_env_and_missing_env() {
        let text = MINIMAL.replace(
            "  url: http://127.0.0.1:5000\n",
            "  url: http://127.0.0.1:5000\n  credentials:\n    username: bob\n    password_env: PRIMARY_PW\n",
        );
        let env = |k: &str| (k == "PRIMARY_PW").then(|| "s3cret".to_owned());
        let c = load_str(Path::new("c.yaml"), &text, &env).unwrap();
        let creds = c.primary.unwrap().credentials.unwrap();
        assert_eq!(
            creds,
            Credentials::Basic {
                username: "bob".into(),
                password: Secret::new("s3cret")
            }
        );
        assert!(!format!("{creds:?}").contains("s3cret"));

        let err = load_err(&text);
        assert!(
            err.contains(":7:19: environment variable PRIMARY_PW is not set"),
            "{err}"
        );
    }

    #[test]
    fn token_credentials_and_their_mistakes() {
        let with = |creds: &str| {
            MINIMAL.replace(
                "  url: http://127.0.0.1:5000\n",
                &format!("  url: http://127.0.0.1:5000\n  credentials:\n{creds}"),
            )
        };
        let env = |k: &str| (k == "TOK").then(|| "t0k".to_owned());
        let load = |creds: &str| {
            load_str(Path::new("c.yaml"), &with(creds), &env)
                .map(|c| c.primary.unwrap().credentials)
        };
        assert_eq!(
            load("    token_env: TOK\n").unwrap(),
            Some(Credentials::Bearer(Secret::new("t0k")))
        );
        assert_eq!(
            load("    identity_token_env: TOK\n").unwrap(),
            Some(Credentials::IdentityToken(Secret::new("t0k")))
        );
        for (creds, message) in [
            ("    username: bob\n    token_env: TOK\n", "exactly one of"),
            (
                "    token_env: TOK\n    identity_token_env: TOK\n",
                "exactly one of",
            ),
            ("    password_env: TOK\n", "need a username"),
            ("    username: bob\n", "need password_env or password_file"),
            (
                "    token_env: TOK\n    token_file: t\n",
                "either token_env or token_file",
            ),
            ("    identity_token_env: NOPE\n", "NOPE is not set"),
        ] {
            let err = load(creds).unwrap_err().to_string();
            assert!(
                err.contains("c.yaml:") && err.contains(message),
                "{creds}: {err}"
            );
        }
    }
}
