//! https registries for real: `docker-registry` serving certificates a CA
//! made by the test signed, one of them requiring client certificates
//! (mutual TLS). georep trusts a region only through `tls.ca_file` (or
//! `insecure: true`), presents `client_cert_file`/`client_key_file` when
//! asked, and says which registry failed and why when it cannot.
// A test: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{client, georep, sync_json};
use georep::lab::localreg::{LocalOptions, LocalRegistry, LocalTls};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "georep test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, &ca_key);

    let server_key = KeyPair::generate().unwrap();
    let mut sp =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = sp.signed_by(&server_key, &issuer).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut cp = CertificateParams::new(vec!["georep-client".to_owned()]).unwrap();
    cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = cp.signed_by(&client_key, &issuer).unwrap();

    Pki {
        ca: write("ca.pem", ca_cert.pem()),
        server_cert: write("server.pem", server.pem()),
        server_key: write("server.key", server_key.serialize_pem()),
        client_cert: write("client.pem", client_cert.pem()),
        client_key: write("client.key", client_key.serialize_pem()),
    }
}

fn config(dir: &Path, primary: &str, regions: &[(&str, &str)]) -> PathBuf {
    let mut yaml =
        format!("state_dir: ./state\nprimary:\n  name: westeurope\n  url: {primary}\nregions:\n");
    for (i, (url, extra)) in regions.iter().enumerate() {
        yaml.push_str(&format!("  - name: r{i}\n    url: {url}\n{extra}"));
    }
    let path = dir.join(format!(
        "georep-{}.yaml",
        regions.len() * 10 + yaml.len() % 7
    ));
    let _ = std::fs::remove_dir_all(dir.join("state"));
    std::fs::write(&path, yaml).unwrap();
    path
}

#[tokio::test]
async fn https_regions_with_a_private_ca_and_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let primary = LocalRegistry::start(&dir.path().join("primary"), LocalOptions::default())
        .await
        .unwrap();
    let tls = |client_ca: Option<PathBuf>| LocalOptions {
        tls: Some(LocalTls {
            certificate: pki.server_cert.clone(),
            key: pki.server_key.clone(),
            client_ca,
        }),
        ..LocalOptions::default()
    };
    let https = LocalRegistry::start(&dir.path().join("https"), tls(None))
        .await
        .unwrap();
    let mtls = LocalRegistry::start(&dir.path().join("mtls"), tls(Some(pki.ca.clone())))
        .await
        .unwrap();
    assert!(https.url().starts_with("https://"));
    georep::lab::corpus::push_image(&client(&primary.url()), "team/app", "1", 200_000, 9)
        .await
        .unwrap();
    let ca = format!("    tls:\n      ca_file: {}\n", pki.ca.display());
    let identity = format!(
        "    tls:\n      ca_file: {}\n      client_cert_file: {}\n      client_key_file: {}\n",
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    );

    // Without the CA, the region's certificate is not trusted: the failure
    // names the region and says why.
    let c = config(dir.path(), &primary.url(), &[(&https.url(), "")]);
    let (code, report) = sync_json(&c, &[]).await;
    assert_eq!(code, 1, "{report:#}");
    let cause = report["failures"][0]["cause"].as_str().unwrap().to_owned();
    assert_eq!(report["failures"][0]["region"], "r0");
    assert!(
        cause.contains(&https.url()) && cause.to_lowercase().contains("certificate"),
        "{cause}"
    );

    // With it, and with the client identity the mTLS region demands.
    let c = config(
        dir.path(),
        &primary.url(),
        &[(&https.url(), &ca), (&mtls.url(), &identity)],
    );
    let (code, report) = sync_json(&c, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    for r in report["regions"].as_array().unwrap() {
        assert_eq!(r["tags_copied"], 1, "{r:#}");
    }

    // The mTLS region refuses a client without a certificate.
    let c = config(dir.path(), &primary.url(), &[(&mtls.url(), &ca)]);
    let (code, report) = sync_json(&c, &[]).await;
    assert_eq!(code, 1, "{report:#}");
    let cause = report["failures"][0]["cause"].as_str().unwrap();
    assert!(cause.contains(&mtls.url()), "{cause}");

    // `insecure: true` skips verification (and says so in the log).
    let c = config(
        dir.path(),
        &primary.url(),
        &[(&https.url(), "    insecure: true\n")],
    );
    let out = georep(&["sync", "--config", c.to_str().unwrap()], &[]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("certificate is not verified"));
}

#[tokio::test]
async fn tls_and_plain_http_mistakes_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    std::fs::write(dir.path().join("junk.pem"), "not a certificate\n").unwrap();
    let p = "http://127.0.0.1:5000";
    for (region, extra, needle) in [
        (
            "http://10.1.2.3:5000",
            String::new(),
            "plain http to a host that is not loopback",
        ),
        (
            "http://registry.internal",
            String::new(),
            "set `insecure: true`",
        ),
        (
            "http://127.0.0.1:5001",
            format!("    tls:\n      ca_file: {}\n", pki.ca.display()),
            "tls settings need an https:// URL",
        ),
        (
            "https://r.example.com",
            "    tls:\n      ca_file: junk.pem\n".to_owned(),
            "ca_file",
        ),
        (
            "https://r.example.com",
            "    tls:\n      ca_file: missing.pem\n".to_owned(),
            "cannot read ca_file",
        ),
        (
            "https://r.example.com",
            format!(
                "    tls:\n      client_cert_file: {}\n",
                pki.client_cert.display()
            ),
            "client_cert_file needs client_key_file",
        ),
        (
            "https://r.example.com",
            format!(
                "    tls:\n      client_cert_file: {}\n      client_key_file: {}\n",
                pki.client_cert.display(),
                pki.ca.display()
            ),
            "do not form a client identity",
        ),
    ] {
        let c = config(dir.path(), p, &[(region, &extra)]);
        let out = georep(&["check-config", "--config", c.to_str().unwrap()], &[]).await;
        assert_eq!(out.status.code(), Some(2), "{region} {extra}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{region} {extra}: {err}");
        assert!(
            err.contains(&format!("{}:", c.display())),
            "no file:line: {err}"
        );
    }
    // Loopback by name, and non-loopback with the explicit flag, are fine.
    for (region, extra) in [
        ("http://localhost:5001", ""),
        ("http://[::1]:5001", ""),
        ("http://10.1.2.3:5000", "    insecure: true\n"),
    ] {
        let c = config(dir.path(), p, &[(region, extra)]);
        let out = georep(&["check-config", "--config", c.to_str().unwrap()], &[]).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{region}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
