"""Plays the secret's owner against Secrets Manager (moto's server in the tests): creates an RDS
secret and rotates it the way AWS's rotation functions do (createSecret puts AWSPENDING,
finishSecret moves AWSCURRENT to it).

usage: secrets_manager.py ENDPOINT create NAME JSON | pending NAME JSON | finish NAME
"""

import sys

import boto3


def main() -> None:
    endpoint, action, name = sys.argv[1:4]
    sm = boto3.client(
        "secretsmanager",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    if action == "create":
        sm.create_secret(Name=name, SecretString=sys.argv[4])
    elif action == "pending":
        sm.put_secret_value(SecretId=name, SecretString=sys.argv[4], VersionStages=["AWSPENDING"])
    elif action == "finish":
        stages = sm.describe_secret(SecretId=name)["VersionIdsToStages"]
        current = next(v for v, s in stages.items() if "AWSCURRENT" in s)
        pending = next(v for v, s in stages.items() if "AWSPENDING" in s)
        sm.update_secret_version_stage(
            SecretId=name, VersionStage="AWSCURRENT", MoveToVersionId=pending, RemoveFromVersionId=current
        )
        sm.update_secret_version_stage(SecretId=name, VersionStage="AWSPENDING", RemoveFromVersionId=pending)
    else:
        raise SystemExit(f"unknown action {action}")
    print("ok")


if __name__ == "__main__":
    main()
