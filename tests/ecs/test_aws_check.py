"""``gradeflow aws check`` against resources on moto's server."""

from __future__ import annotations

import json
import uuid
from typing import Any

from gradeflow import Settings
from gradeflow._ecs_check import check_aws

from .conftest import ACCOUNT, client

REGISTRY = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"


def settings_for(**changes: Any) -> Settings:
    base: dict[str, Any] = {
        "store": "s3",
        "s3_bucket": "b",
        "ecs_cluster": "c",
        "ecs_execution_role_arn": f"arn:aws:iam::{ACCOUNT}:role/gf-exec",
        "ecs_agent_image": f"{REGISTRY}/gradeflow/agent:1",
        "ecs_shim_repository": f"{REGISTRY}/gradeflow/shim",
        "ecs_subnets": ["subnet-missing"],
    }
    base.update(changes)
    return Settings(**base)


def test_everything_present_passes(moto_endpoint: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    c = {name: client(name, moto_endpoint) for name in ("ecs", "s3", "logs", "ecr", "iam", "ec2")}
    c["s3"].create_bucket(Bucket=f"b-{suffix}")
    c["ecs"].create_cluster(clusterName=f"c-{suffix}")
    c["logs"].create_log_group(logGroupName=f"/gf/{suffix}")
    role = c["iam"].create_role(RoleName=f"exec-{suffix}", AssumeRolePolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": []}))["Role"]["Arn"]  # fmt: skip
    for repo in (f"agent-{suffix}", f"shim-{suffix}"):
        c["ecr"].create_repository(repositoryName=repo)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "config": {"digest": "sha256:" + "0" * 64},
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        }
    )
    c["ecr"].put_image(repositoryName=f"agent-{suffix}", imageManifest=manifest, imageTag="1")
    vpc = c["ec2"].create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    subnet = c["ec2"].create_subnet(VpcId=vpc, CidrBlock="10.1.0.0/24")["Subnet"]["SubnetId"]
    settings = settings_for(
        s3_bucket=f"b-{suffix}", ecs_cluster=f"c-{suffix}", ecs_log_group=f"/gf/{suffix}",
        ecs_execution_role_arn=role, ecs_agent_image=f"{REGISTRY}/agent-{suffix}:1",
        ecs_shim_repository=f"{REGISTRY}/shim-{suffix}", ecs_subnets=[subnet],
    )  # fmt: skip
    checks = check_aws(settings, c.__getitem__)
    assert [x for x in checks if not x.ok] == []
    assert {x.name for x in checks} >= {"bucket", "cluster", "log group", "execution role",
                                         "agent image", "shim repository", "subnets"}  # fmt: skip


def test_each_missing_resource_is_named_with_its_setting(moto_endpoint: str) -> None:
    c = {name: client(name, moto_endpoint) for name in ("ecs", "s3", "logs", "ecr", "iam", "ec2")}
    checks = {x.name: x for x in check_aws(settings_for(
        s3_bucket=f"nope-{uuid.uuid4().hex[:8]}", ecs_cluster="nope"), c.__getitem__)}  # fmt: skip
    assert not any(x.ok for x in checks.values())
    assert "GRADEFLOW_S3_BUCKET" in checks["bucket"].detail
    assert "GRADEFLOW_ECS_CLUSTER" in checks["cluster"].detail
    assert "GRADEFLOW_ECS_LOG_GROUP" in checks["log group"].detail
    assert "does not exist" in checks["execution role"].detail
    assert "repository gradeflow/agent does not exist" in checks["agent image"].detail
    assert "subnet-missing" in checks["subnets"].detail


def test_a_local_store_is_reported(moto_endpoint: str) -> None:
    checks = check_aws(settings_for(store="local"), lambda name: client(name, moto_endpoint))
    store = next(x for x in checks if x.name == "store")
    assert not store.ok and "GRADEFLOW_STORE=s3" in store.detail
