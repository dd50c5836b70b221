//! Certificates made at test time (rcgen): one CA and leaves it signs, as PEM files in a
//! directory the database servers' OS users can read.

use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};

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
        // What strict verifiers (sslyze's, through pyca/cryptography) ask of a CA and its
        // leaves: key usages, key identifiers and a positive serial number.
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(SerialNumber::from(rand_serial()));
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
        // 90 days from yesterday: what a real issuer gives, and within Mozilla's 398-day cap
        // (the TLS scan checks it).
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(SerialNumber::from(rand_serial()));
        let today = days_since_epoch();
        let ((y0, m0, d0), (y1, m1, d1)) = (civil(today - 1), civil(today + 89));
        params.not_before = rcgen::date_time_ymd(y0, m0, d0);
        params.not_after = rcgen::date_time_ymd(y1, m1, d1);
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

fn days_since_epoch() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    i64::try_from(secs / 86_400).unwrap()
}

/// (year, month, day) of the day `days` after 1970-01-01 (the civil-from-days algorithm).
fn civil(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        i32::try_from(year).unwrap(),
        u8::try_from(month).unwrap(),
        u8::try_from(day).unwrap(),
    )
}

/// Eight random bytes with the top bit clear: a positive serial number, as RFC 5280 asks.
fn rand_serial() -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut bytes = (nanos as u64 ^ u64::from(std::process::id()) << 32).to_be_bytes();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    bytes.to_vec()
}
