//! Throwaway certificate authorities for TLS tests, made with `openssl`
//! (Debian package `openssl`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, ensure};

/// A CA and, signed by it, a server certificate for `127.0.0.1` and a
/// client certificate, each with its key. P-256 keys (quick to make); valid
/// for two days.
#[derive(Debug, Clone)]
pub struct Pki {
    /// `<name>-ca.pem`
    pub ca: PathBuf,
    /// `<name>-server.pem` and `.key`: `subjectAltName=IP:127.0.0.1`, serverAuth.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// `<name>-client.pem` and `.key`: clientAuth.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Makes the files of [`Pki`] named `<name>-…` in `dir`. Every file is
/// world-readable, so servers running as another user (PostgreSQL's
/// `postgres`) can read them; the keys are worthless outside the test.
pub fn make_pki(dir: &Path, name: &str) -> anyhow::Result<Pki> {
    let f = |suffix: &str| format!("{name}-{suffix}");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let (ca, ca_key) = (f("ca.pem"), f("ca.key"));
    let subject = format!("/CN={name} test CA");
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    args.extend([
        "-keyout", &ca_key, "-out", &ca, "-days", "2", "-subj", &subject,
    ]);
    openssl(dir, &args)?;
    for (who, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        ),
        (
            "client",
            "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
        ),
    ] {
        let (key, csr, pem, extfile) = (
            f(&format!("{who}.key")),
            f(&format!("{who}.csr")),
            f(&format!("{who}.pem")),
            f(&format!("{who}.ext")),
        );
        std::fs::write(dir.join(&extfile), ext)?;
        let subject = format!("/CN=pgha-{who}");
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
        openssl(dir, &args)?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &extfile,
            ],
        )?;
    }
    let pki = Pki {
        ca: dir.join(&ca),
        server_cert: dir.join(f("server.pem")),
        server_key: dir.join(f("server.key")),
        client_cert: dir.join(f("client.pem")),
        client_key: dir.join(f("client.key")),
    };
    for p in [
        &pki.ca,
        &pki.server_cert,
        &pki.server_key,
        &pki.client_cert,
        &pki.client_key,
    ] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("chmod {}", p.display()))?;
    }
    Ok(pki)
}

/// Runs `openssl` with `args` in `dir`, bounded in time (blocking: it
/// takes milliseconds, and callers include synchronous setup closures).
fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let mut child = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("run openssl (Debian package openssl)")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("openssl {args:?} did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    ensure!(status.success(), "openssl {args:?}: {stderr}");
    Ok(())
}
