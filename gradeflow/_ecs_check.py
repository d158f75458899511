"""``gradeflow aws check``: does everything the ecs backend needs exist?

Each check names the resource and the setting it came from, and says exactly
what is missing, so an operator can fix a deployment before the first
grading run fails halfway. Checks only read (Describe/Get/Head); none of them
creates or changes anything.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ._settings import Settings

__all__ = ["Check", "check_aws"]

_ECR = re.compile(
    r"^(?P<registry>\d{12})\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repo>[a-z0-9._/-]+?)(?::(?P<tag>[A-Za-z0-9_.-]{1,128}))?$"
)


@dataclass(frozen=True, slots=True)
class Check:
    """One verified (or missing) resource."""

    name: str
    ok: bool
    detail: str


def check_aws(settings: Settings, clients: Callable[[str], Any]) -> list[Check]:
    """Run every check; ``clients(service)`` gives a boto3 client (ecs, s3, logs, ecr, iam, ec2)."""
    checks: list[Check] = []

    def run(name: str, probe: Callable[[], Check]) -> None:
        try:
            checks.append(probe())
        except ClientError as exc:
            error = exc.response.get("Error", {})
            checks.append(Check(name, False, f"{error.get('Code')}: {error.get('Message')}"))
        except BotoCoreError as exc:
            checks.append(Check(name, False, str(exc)))

    s = settings
    if s.store != "s3" or not s.s3_bucket:
        needed = "GRADEFLOW_STORE=s3 and GRADEFLOW_S3_BUCKET are required"
        checks.append(Check("store", False, f"{needed}: tasks reach results only through S3"))
    else:
        bucket = s.s3_bucket
        run("bucket", lambda: _bucket(clients("s3"), bucket))
    if not s.ecs_cluster:
        checks.append(Check("cluster", False, "GRADEFLOW_ECS_CLUSTER is not set"))
    else:
        cluster = s.ecs_cluster
        run("cluster", lambda: _cluster(clients("ecs"), cluster))
    run("log group", lambda: _log_group(clients("logs"), s.ecs_log_group))
    if s.ecs_execution_role_arn:
        arn = s.ecs_execution_role_arn
        run("execution role", lambda: _role(clients("iam"), "execution role", arn))
    elif s.ecs_launch_type == "FARGATE":
        checks.append(Check("execution role", False,
                            "GRADEFLOW_ECS_EXECUTION_ROLE_ARN is required on Fargate"))  # fmt: skip
    if s.ecs_task_role_arn:
        task_arn = s.ecs_task_role_arn
        run("task role", lambda: _role(clients("iam"), "task role", task_arn))
    if not s.ecs_agent_image:
        checks.append(Check("agent image", False, "GRADEFLOW_ECS_AGENT_IMAGE is not set"))
    else:
        agent = s.ecs_agent_image
        run("agent image", lambda: _image(clients("ecr"), "agent image", agent))
    if not s.ecs_shim_repository:
        checks.append(Check("shim repository", False, "GRADEFLOW_ECS_SHIM_REPOSITORY is not set"))
    else:
        repo = s.ecs_shim_repository
        run("shim repository", lambda: _image(clients("ecr"), "shim repository", repo))
    if s.ecs_network_mode == "awsvpc":
        if not s.ecs_subnets:
            checks.append(Check("subnets", False, "GRADEFLOW_ECS_SUBNETS is empty (awsvpc)"))
        else:
            subnets = list(s.ecs_subnets)
            run("subnets", lambda: _subnets(clients("ec2"), subnets))
        if s.ecs_security_groups:
            groups = list(s.ecs_security_groups)
            run("security groups", lambda: _groups(clients("ec2"), groups))
    return checks


def _bucket(s3: Any, bucket: str) -> Check:
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code in {"404", "NoSuchBucket", "NotFound"}:
            return Check("bucket", False, f"s3://{bucket} does not exist (GRADEFLOW_S3_BUCKET)")
        raise
    return Check("bucket", True, f"s3://{bucket}")


def _cluster(ecs: Any, cluster: str) -> Check:
    response = ecs.describe_clusters(clusters=[cluster])
    for found in response.get("clusters", []):
        if found.get("status") == "ACTIVE":
            return Check("cluster", True, str(found.get("clusterArn")))
        return Check(
            "cluster", False, f"{cluster} is {found.get('status')} (GRADEFLOW_ECS_CLUSTER)"
        )
    return Check("cluster", False, f"{cluster} does not exist (GRADEFLOW_ECS_CLUSTER)")


def _log_group(logs: Any, group: str) -> Check:
    found = logs.describe_log_groups(logGroupNamePrefix=group).get("logGroups", [])
    if any(g.get("logGroupName") == group for g in found):
        return Check("log group", True, group)
    return Check("log group", False, f"{group} does not exist (GRADEFLOW_ECS_LOG_GROUP); "
                                     "awslogs will not create it")  # fmt: skip


def _role(iam: Any, what: str, arn: str) -> Check:
    name = arn.rsplit("/", 1)[-1]
    try:
        role = iam.get_role(RoleName=name)["Role"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchEntity":
            return Check(what, False, f"{arn} does not exist")
        raise
    if role.get("Arn") != arn:
        return Check(what, False, f"{name} exists as {role.get('Arn')}, not {arn}")
    return Check(what, True, arn)


def _image(ecr: Any, what: str, image: str) -> Check:
    match = _ECR.match(image)
    if match is None:
        return Check(what, True, f"{image} (not in ECR: not verified)")
    repo, tag = match["repo"], match["tag"]
    try:
        if tag is None:
            ecr.describe_repositories(registryId=match["registry"], repositoryNames=[repo])
            return Check(what, True, image)
        ecr.describe_images(registryId=match["registry"], repositoryName=repo,
                            imageIds=[{"imageTag": tag}])  # fmt: skip
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code == "RepositoryNotFoundException":
            return Check(what, False, f"repository {repo} does not exist ({image})")
        if code == "ImageNotFoundException":
            return Check(what, False, f"{repo} has no tag {tag} ({image})")
        raise
    return Check(what, True, image)


def _subnets(ec2: Any, subnets: list[str]) -> Check:
    found = {s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "subnet-id", "Values": subnets}])["Subnets"]}  # fmt: skip
    missing = [s for s in subnets if s not in found]
    if missing:
        return Check("subnets", False, f"not found: {', '.join(missing)} (GRADEFLOW_ECS_SUBNETS)")
    return Check("subnets", True, ", ".join(subnets))


def _groups(ec2: Any, groups: list[str]) -> Check:
    found = {g["GroupId"] for g in ec2.describe_security_groups(
        Filters=[{"Name": "group-id", "Values": groups}])["SecurityGroups"]}  # fmt: skip
    missing = [g for g in groups if g not in found]
    if missing:
        detail = f"not found: {', '.join(missing)} (GRADEFLOW_ECS_SECURITY_GROUPS)"
        return Check("security groups", False, detail)
    return Check("security groups", True, ", ".join(groups))
