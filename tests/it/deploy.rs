//! deploy/: both kustomize overlays render, every object validates against the Kubernetes
//! schemas, and the sluice config each ConfigMap carries passes `sluice check-config`
//! (deploy/check.py does the work; this runs it with the binary under test).

use std::process::Command;

use crate::support::tools::{self, command_output, repo_root};

#[test]
fn kubernetes_manifests_render_validate_and_carry_a_valid_config() {
    // kubectl is not in Debian's archive; where it is missing the manifests cannot be rendered.
    if tools::which("kubectl").is_none() {
        eprintln!(
            "SKIPPED: kubectl is not on PATH; deploy/check.py needs it to render the overlays"
        );
        return;
    }
    let (status, out, err) = command_output(
        Command::new(tools::python())
            .arg(repo_root().join("deploy/check.py"))
            .arg(env!("CARGO_BIN_EXE_sluice")),
    );
    assert!(status.success(), "deploy/check.py:\n{out}{err}");
    assert!(out.contains("all 2 overlays ok"), "{out}");
    assert!(
        out.contains("sluice check-config: sluice.yaml: ok"),
        "{out}"
    );
}
