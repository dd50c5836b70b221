//! Reading RDS secrets from AWS Secrets Manager: the AWSCURRENT version and, while a rotation
//! runs, the AWSPENDING one.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::DisplayErrorContext;

use super::secret::{self, Secret};
use crate::config::SecretsManager;

/// A fetch that hangs must not hold a server login (which waits for a rejected password's
/// refresh) much longer than a connect timeout.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// The AWS configuration sluice uses: the `secrets_manager` section over the standard AWS
/// environment and credential chain (so IRSA's web identity works in EKS).
async fn sdk_config(section: &SecretsManager) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
        TimeoutConfig::builder()
            .operation_timeout(OPERATION_TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .build(),
    );
    if let Some(region) = &section.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if !section.endpoint_url.is_empty() {
        loader = loader.endpoint_url(&section.endpoint_url);
    }
    loader.load().await
}

/// The AWS configuration, loaded on first use and then shared: Secrets Manager and
/// `server_iam` read the same environment and credential chain once.
#[derive(Debug)]
pub struct AwsEnv<'a> {
    section: &'a SecretsManager,
    config: tokio::sync::OnceCell<SdkConfig>,
}

impl<'a> AwsEnv<'a> {
    pub fn new(section: &'a SecretsManager) -> Self {
        Self {
            section,
            config: tokio::sync::OnceCell::new(),
        }
    }

    pub async fn config(&self) -> &SdkConfig {
        self.config.get_or_init(|| sdk_config(self.section)).await
    }
}

/// One secret's versions as Secrets Manager holds them now.
#[derive(Debug)]
pub struct Fetched {
    pub current: Secret,
    /// AWSPENDING when a rotation is under way and it differs from AWSCURRENT.
    pub pending: Option<Secret>,
}

/// Reads secret `id`. The error is safe to log: it names the failure, never a value.
pub async fn fetch(client: &Client, id: &str) -> Result<Fetched, String> {
    // Asked for by name: moto answers a stage-less read with the secret's first version.
    let current = read(client, id, "AWSCURRENT")
        .await?
        .ok_or_else(|| format!("secret {id} has no AWSCURRENT version"))?;
    // A failure to read AWSPENDING is not worth failing the refresh for: outside a rotation
    // there is none, and inside one AWSCURRENT still works until the database changes.
    let pending = match read(client, id, "AWSPENDING").await {
        Ok(p) => p.filter(|p| p != &current),
        Err(e) => {
            tracing::debug!(secret = id, error = %e, "AWSPENDING not read");
            None
        }
    };
    Ok(Fetched { current, pending })
}

async fn read(client: &Client, id: &str, stage: &str) -> Result<Option<Secret>, String> {
    let result = client
        .get_secret_value()
        .secret_id(id)
        .version_stage(stage)
        .send()
        .await;
    let output = match result {
        Ok(o) => o,
        Err(e) => {
            if stage == "AWSPENDING"
                && e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception())
            {
                return Ok(None);
            }
            return Err(format!(
                "reading secret {id} from Secrets Manager failed: {}",
                DisplayErrorContext(&e)
            ));
        }
    };
    let text = output.secret_string().ok_or_else(|| {
        format!("secret {id} has no SecretString (binary secrets are not RDS secrets)")
    })?;
    secret::parse_json(text)
        .map(Some)
        .map_err(|e| format!("secret {id}: {e}"))
}
