//! The HTTP clients that talk to registries: the options every one shares
//! (connect timeout, idle pool, no Nagle, georep's user agent), the one
//! client most registries share, and a client of its own for a registry
//! with TLS settings. A leaf: the config loader builds and keeps each
//! registry's own client (so bad TLS material is reported with its line,
//! once), and the registry client uses what the config kept.

use std::time::Duration;

/// georep's `User-Agent` on every request.
pub const USER_AGENT: &str = concat!("georep/", env!("CARGO_PKG_VERSION"));

fn builder(connect_timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .user_agent(USER_AGENT)
}

/// The client shared by every registry without TLS settings of its own.
pub fn shared_client(connect_timeout: Duration) -> reqwest::Client {
    builder(connect_timeout)
        .build()
        // Building without extra material fails only if the TLS backend
        // cannot initialise, which would make every registry unusable:
        // nothing sensible to continue with.
        .expect("HTTP client (TLS backend) failed to initialise")
}

/// TLS settings of one registry.
#[derive(Clone, Copy, Debug, Default)]
pub struct TlsSettings<'a> {
    /// PEM certificates trusted besides the system roots.
    pub ca_pem: Option<&'a [u8]>,
    /// PEM client certificate chain followed by its private key.
    pub identity_pem: Option<&'a str>,
    /// Do not verify the server's certificate (`insecure: true` on https).
    pub accept_invalid_certs: bool,
}

/// A client of its own for a registry with TLS settings; `None` when it
/// has none and the shared client will do. Fails on material that does
/// not parse or does not fit together (a key that is not the
/// certificate's), with the TLS library's reason.
pub fn client_with_tls(
    tls: TlsSettings<'_>,
    connect_timeout: Duration,
) -> Result<Option<reqwest::Client>, String> {
    if tls.ca_pem.is_none() && tls.identity_pem.is_none() && !tls.accept_invalid_certs {
        return Ok(None);
    }
    let mut b = builder(connect_timeout);
    if let Some(pem) = tls.ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| format!("{e:#}"))? {
            b = b.add_root_certificate(cert);
        }
    }
    if let Some(pem) = tls.identity_pem {
        let id = reqwest::Identity::from_pem(pem.as_bytes()).map_err(|e| format!("{e:#}"))?;
        b = b.identity(id);
    }
    if tls.accept_invalid_certs {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build().map(Some).map_err(|e| format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_settings_no_client_of_its_own_and_bad_material_is_refused() {
        let t = Duration::from_secs(1);
        assert!(
            client_with_tls(TlsSettings::default(), t)
                .expect("builds")
                .is_none()
        );
        let err = client_with_tls(
            TlsSettings {
                identity_pem: Some(
                    "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
                ),
                ..TlsSettings::default()
            },
            t,
        )
        .expect_err("not an identity");
        assert!(!err.is_empty());
    }
}
