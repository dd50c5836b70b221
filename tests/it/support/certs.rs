//! Certificates made at test time (rcgen): one CA and leaves it signs, as PEM files in a
//! directory the database servers' OS users can read.

use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use super::tools::is_root;

/// A CA in a temp dir; [`Certs::leaf`] writes certificates it signed.
pub struct Certs {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    ca: PathBuf,
}

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certs").field("ca", &self.ca).finish()
    }
}

/// A certificate and its key file.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certs {
    pub fn new(name: &str) -> Certs {
        let dir = tempfile::Builder::new()
            .prefix("sluice-certs-")
            .tempdir_in("/tmp")
            .unwrap();
        // The servers run as their own OS users and must reach their files.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let cert = params.self_signed(&key).unwrap();
        let ca = dir.path().join(format!("{name}-ca.pem"));
        std::fs::write(&ca, cert.pem()).unwrap();
        Certs {
            dir,
            issuer: Issuer::new(params, key),
            ca,
        }
    }

    pub fn ca(&self) -> &Path {
        &self.ca
    }

    /// A leaf for `names` (DNS names or IP addresses) as `<file>.pem` / `<file>.key`; the
    /// key is private to `owner` (an OS user), as PostgreSQL insists.
    pub fn leaf(&self, file: &str, names: &[&str], owner: Option<&str>) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].clone());
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let leaf = Leaf {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        std::fs::write(&leaf.cert, cert.pem()).unwrap();
        std::fs::write(&leaf.key, key.serialize_pem()).unwrap();
        std::fs::set_permissions(
            &leaf.key,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        if let Some(owner) = owner.filter(|_| is_root()) {
            let status = Command::new("chown")
                .arg(owner)
                .arg(&leaf.key)
                .arg(&leaf.cert)
                .status()
                .unwrap();
            assert!(status.success());
        }
        leaf
    }
}
