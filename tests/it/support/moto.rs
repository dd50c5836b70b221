//! moto's server on a free loopback port standing in for AWS Secrets Manager, and the
//! secret's owner acting on it through boto3 (`drivers/secrets_manager.py`).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::tools::{free_port, python, repo_root, run_ok};

/// A running `moto_server`; killed (by PID) on drop or [`Moto::stop`].
#[derive(Debug)]
pub struct Moto {
    child: Option<Child>,
    port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        let python = python();
        let port = free_port();
        let child = Command::new(python.with_file_name("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn moto_server");
        let moto = Moto {
            child: Some(child),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server not listening after 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment sluice needs to reach this server (any credentials do for moto).
    pub fn env(&self) -> [(&'static str, &'static str); 3] {
        [
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            // No instance-metadata probing on a machine that is not in EC2.
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
    }

    /// Runs `drivers/secrets_manager.py ACTION NAME [JSON]` against this server.
    pub fn owner(&self, action: &str, name: &str, secret: Option<(&str, &str)>) {
        let script: PathBuf = repo_root().join("tests/it/drivers/secrets_manager.py");
        let mut cmd = Command::new(python());
        cmd.arg(script).args([&self.url(), action, name]);
        if let Some((user, password)) = secret {
            cmd.arg(
                serde_json::json!({"username": user, "password": password, "engine": "postgres"})
                    .to_string(),
            );
        }
        run_ok(&mut cmd);
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}
