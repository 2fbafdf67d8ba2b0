import ast
import getpass
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, free_port, sweep_config

RAY = str(Path(sys.executable).parent / "ray")
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-onprem.yaml"])
def test_cluster_configs_pass_rays_own_validation(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((ROOT / name).read_text())
    validate_config(prepare_config(cfg))  # raises on a schema error
    assert any("pip install" in c for c in cfg["setup_commands"])


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-onprem.yaml"])
def test_cluster_configs_are_closed_by_default(name):
    """Dashboard and job API on the head's loopback, a token made on every fresh cluster and given to its
    workers, a key for the cluster only, no edits of the user's shell files, only what the nodes need mounted."""
    text = (ROOT / name).read_text()
    cfg = yaml.safe_load(text)
    assert "0.0.0.0" not in text and ".bashrc" not in text
    head = [c for c in cfg["head_start_ray_commands"] if "ray start" in c]
    assert len(head) == 1 and head[0].startswith("RAY_AUTH_MODE=token ") and "--dashboard-host=127.0.0.1" in head[0]
    assert all(c.startswith("RAY_AUTH_MODE=token ") for c in cfg["worker_start_ray_commands"] if "ray start" in c)
    assert any("get-auth-token --generate > /dev/null" in c and "chmod 600 ~/.ray/auth_token" in c
               for c in cfg["head_setup_commands"])
    assert cfg["cluster_synced_files"] == ["~/.ray/auth_token"]
    key = cfg["auth"].get("ssh_private_key", "")
    assert not any(k in key for k in ("id_rsa", "id_ed25519", "id_ecdsa"))
    assert set(cfg["file_mounts"].values()) == {"./lmc_ray", "./jobs", "./pyproject.toml", "./README.md"}


def test_cloud_cluster_autoscales_gpu_workers():
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    worker = cfg["available_node_types"]["gpu_worker"]
    assert worker["node_config"]["InstanceType"].startswith("g") and worker["min_workers"] == 0
    assert cfg["provider"]["type"] == "aws"


def test_onprem_cluster_uses_the_local_provider():
    cfg = yaml.safe_load((ROOT / "cluster-onprem.yaml").read_text())
    assert cfg["provider"]["type"] == "local" and cfg["provider"]["worker_ips"]


def _ssh_to_self(root: Path) -> dict:
    """Key-only ssh into this machine without opening a port or touching the system's sshd: ssh's
    ProxyCommand runs sshd in inetd mode (-i) per connection. SetEnv gives the sessions a home of their own,
    so what the launcher writes to ~ (file mounts, bootstrap config, ~/.bashrc) stays in the test's folder."""
    home = root / "home"
    home.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "host")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "user")], check=True)
    (root / "sshd_config").write_text(
        f"HostKey {root / 'host'}\nAuthorizedKeysFile {root / 'user.pub'}\nPasswordAuthentication no\n"
        f"KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nSetEnv HOME={home}\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    return {"ssh_user": getpass.getuser(), "ssh_private_key": str(root / "user"),
            "ssh_proxy_command": f"{SSHD} -i -f {root / 'sshd_config'}"}


def _stop_session_of(marker: str) -> None:
    """Stop the Ray head `ray up` started, and only it: every process of the ssh session whose gcs_server
    runs under `marker` (`ray down` would run `ray stop`, which stops every Ray on this machine)."""
    ps = subprocess.run(["ps", "-ww", "-eo", "sid=,args="], capture_output=True, text=True).stdout.splitlines()
    sids = {line.split()[0] for line in ps if "gcs_server" in line and marker in line}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for sid in sids:
            subprocess.run(["pkill", f"-{sig.value}", "-s", sid])
        time.sleep(5)


@pytest.mark.slow
def test_ray_up_and_a_sweep_on_the_head_with_its_api_closed(tmp_path, mnli_texts):
    """cluster-onprem.yaml with the launcher's local provider, head = this machine reached over ssh: `ray up`
    syncs the file mounts, runs the setup and start commands as shipped (its own ports aside); the head's job
    API refuses a request without the cluster's token and accepts one with it; `ray exec` runs jobs/sweep.py
    on the head as the README says, which joins the launched cluster and fills the store."""
    import json
    import urllib.error
    import urllib.request

    import psutil

    missing = [t for t in ("ssh", "ssh-keygen", "rsync") if not shutil.which(t)] + ([] if Path(SSHD).exists() else ["sshd"])
    if missing or os.geteuid() != 0:
        why = f"needs root and {', '.join(missing) or 'ssh'} (apt-get install openssh-server rsync; .ci/run does)"
        pytest.skip(why)
    from lmc_ray.storage.store import Store
    from lmc_ray.testing.population import make_population

    root = Path(tempfile.mkdtemp(prefix="rayup", dir="/tmp"))  # short: Ray's socket paths live under it
    ports = {k: free_port() for k in ("gcs", "dashboard", "agent", "metrics", "client")}
    cfg = yaml.safe_load((ROOT / "cluster-onprem.yaml").read_text())
    cfg["cluster_name"] = f"lmcray-test-{root.name}"
    cfg["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    cfg["min_workers"] = cfg["max_workers"] = 0
    cfg["auth"] = _ssh_to_self(root)
    # The shipped setup creates ~/lmc-ray-venv and pip-installs the project into it; here that venv is the
    # one running this test (a fresh install would fetch a CUDA torch).
    assert len(cfg["setup_commands"]) == 1 and "lmc-ray-venv" in cfg["setup_commands"][0]
    cfg["setup_commands"] = [f"ln -sfn {sys.prefix} ~/lmc-ray-venv"]
    # The shipped head start, with its own ports and temp dir added and no `ray stop` (which would stop every
    # Ray on this machine): auth mode and dashboard host stay as shipped.
    (start,) = [c for c in cfg["head_start_ray_commands"] if "ray start --head" in c]
    cfg["head_start_ray_commands"] = [start.replace("--port=6379", (
        f"--port={ports['gcs']} --temp-dir={root / 'ray'} --dashboard-port={ports['dashboard']} "
        f"--dashboard-agent-listen-port={ports['agent']} --metrics-export-port={ports['metrics']} "
        f"--ray-client-server-port={ports['client']} --num-cpus=2 --disable-usage-stats"))]
    cluster = root / "cluster.yaml"
    cluster.write_text(yaml.safe_dump(cfg))
    models = make_population(tmp_path / "pop", 4, mnli_texts, ["entailment", "neutral", "contradiction"], layers=2,
                             hidden=32, heads=2, vocab_size=1500)
    store = tmp_path / "store"
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep_config(models, store)))
    try:
        up = subprocess.run([RAY, "up", "-y", "--no-config-cache", str(cluster)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
        assert up.returncode == 0, (up.stdout + up.stderr)[-3000:]
        home = root / "home"
        assert (home / "lmc-ray" / "jobs" / "sweep.py").is_file()
        assert (home / "lmc-ray" / "lmc_ray" / "configs" / "mnli.yaml").is_file()  # the shipped configurations
        assert not [p for p in ("tests", ".git", ".venv", "results") if (home / "lmc-ray" / p).exists()]
        assert (home / "ray_bootstrap_config.yaml").is_file()
        token_file = home / ".ray" / "auth_token"
        token = token_file.read_text().strip()
        assert len(token) >= 32 and oct(token_file.stat().st_mode)[-3:] == "600"
        assert token not in up.stdout + up.stderr  # never printed

        # The dashboard and its job API listen on the head's loopback only...
        listening = {c.laddr.ip for c in psutil.net_connections("inet")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == ports["dashboard"]}
        assert listening == {"127.0.0.1"}, listening
        # ...and refuse a job without the token, even there.
        api = f"http://127.0.0.1:{ports['dashboard']}/api/jobs/"
        body = json.dumps({"entrypoint": "touch /tmp/pwned-by-lmc-ray-test"}).encode()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(api, data=body, method="POST",
                                                          headers={"Content-Type": "application/json"}), timeout=30)
        assert refused.value.code in (401, 403)
        # With the token, fetched as README says (`ray exec ... 'cat ~/.ray/auth_token' | tail -1`), a job is accepted.
        fetched = subprocess.run([RAY, "exec", str(cluster), "cat ~/.ray/auth_token"], cwd=ROOT, capture_output=True,
                                 text=True, timeout=120)
        assert fetched.stdout.strip().splitlines()[-1] == token, fetched.stdout[-1000:]
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
        env.pop("RAY_ADDRESS", None)
        sub = subprocess.run([RAY, "job", "submit", "--address", f"http://127.0.0.1:{ports['dashboard']}", "--",
                              "echo", "token-accepted"], capture_output=True, text=True, timeout=300, env=env)
        assert sub.returncode == 0 and "token-accepted" in sub.stdout + sub.stderr, (sub.stdout + sub.stderr)[-3000:]

        # The sweep as README's on-prem line runs it. The test's head has its own ports and temp dir, so its address
        # is given (RAY_ADDRESS); Ray sends the token to a given address only when told to (RAY_AUTH_MODE).
        run = subprocess.run([RAY, "exec", str(cluster),
                              f"RAY_ADDRESS=127.0.0.1:{ports['gcs']} RAY_AUTH_MODE=token ~/lmc-ray-venv/bin/lmc-ray sweep "
                              f"--config {tmp_path / 'sweep.yaml'}"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
        out = run.stdout + run.stderr
        assert run.returncode == 0, out[-3000:]
        assert f"Ray dashboard: http://127.0.0.1:{ports['dashboard']}" in out  # the driver joined the launched head
        assert "6 of 6 pairs to compute" in out and token not in out
        curves = Store(str(store)).curves().to_table().to_pandas()
        assert curves.groupby(["model_a", "model_b"]).alpha.nunique().tolist() == [5] * 6
        assert curves.loss.notna().all() and (curves.loss > 0).all()
    finally:
        _stop_session_of(str(root))
        shutil.rmtree(root, ignore_errors=True)


class _CfnLoader(yaml.SafeLoader):
    """CloudFormation's short tags (!Ref x) read as their long form ({"Ref": x})."""


_CfnLoader.add_multi_constructor("!", lambda loader, tag, node: {tag: (
    loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else
    loader.construct_sequence(node, deep=True) if isinstance(node, yaml.SequenceNode) else
    loader.construct_mapping(node, deep=True))})


def _deploy_access(ec2, cf, **over) -> dict:
    """cluster-access.yaml as a stack on the S3/EC2/IAM server; its outputs."""
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    params = dict(VpcId=vpc, SshCidr="203.0.113.7/32", ModelsBucket="lab", ModelsPrefix="models", StoreBucket="lab",
                  StorePrefix="results", **over)
    cf.create_stack(StackName="access", TemplateBody=(ROOT / "cluster-access.yaml").read_text(),
                    Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
                    Capabilities=["CAPABILITY_IAM"])
    stack = cf.describe_stacks(StackName="access")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack
    return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}


def test_the_cluster_gets_least_privilege_profiles_and_ssh_from_one_cidr(tmp_path, monkeypatch):
    """cluster-access.yaml passes cfn-lint and deploys (moto's CloudFormation, on loopback). Ray's own AWS bootstrap,
    run on cluster.yaml with the stack's outputs filled in, keeps them: no default profile (EC2 + S3 full access),
    no default group (ssh from anywhere) — and on cluster.yaml without them it would create both. The roles' S3
    rights, evaluated by the server's IAM with each role's assumed credentials: both read the models prefix; the
    head writes the store prefix, the workers cannot; neither writes the models or anything else."""
    import boto3
    import botocore.exceptions
    import urllib.request

    from ray.autoscaler._private.aws.config import bootstrap_aws
    from ray.autoscaler._private.util import prepare_config

    from lmc_ray.testing.s3 import moto_server

    lint = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), str(ROOT / "cluster-access.yaml")],
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    monkeypatch.setenv("HOME", str(tmp_path))  # Ray's bootstrap writes the cluster's new key pair under ~/.ssh
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")  # the AWS policies Ray's default profile attaches
    with moto_server() as url:
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
        ec2, cf, iam, sts = (boto3.client(s, region_name="us-west-2") for s in ("ec2", "cloudformation", "iam", "sts"))
        out = _deploy_access(ec2, cf)
        group = ec2.describe_security_groups(GroupIds=[out["SecurityGroupId"]])["SecurityGroups"][0]
        doors = sorted((p["IpProtocol"], p.get("FromPort"), [r["CidrIp"] for r in p["IpRanges"]],
                        [g["GroupId"] for g in p["UserIdGroupPairs"]]) for p in group["IpPermissions"])
        assert doors == [("-1", None, [], [out["SecurityGroupId"]]), ("tcp", 22, ["203.0.113.7/32"], [])], doors

        text = (ROOT / "cluster.yaml").read_text().replace(
            "ami-0a2363a9cff180a64", ec2.describe_images()["Images"][0]["ImageId"])
        for key, value in out.items():
            text = text.replace(f"arn:aws:iam::123456789012:instance-profile/CHANGE-ME-{key}", value)
            text = text.replace(f"sg-CHANGE-ME-{key}", value)
        assert "CHANGE-ME-" not in text.split("available_node_types")[1].split("head_node_type")[0]
        groups = lambda: {g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]}  # noqa: E731
        before = groups()
        nodes = bootstrap_aws(prepare_config(yaml.safe_load(text)))["available_node_types"]
        assert groups() == before and all(p["InstanceProfileName"].startswith("access-")
                                          for p in iam.list_instance_profiles()["InstanceProfiles"])
        assert nodes["head"]["node_config"]["IamInstanceProfile"] == {"Arn": out["HeadProfileArn"]}
        assert nodes["gpu_worker"]["node_config"]["IamInstanceProfile"] == {"Arn": out["WorkerProfileArn"]}
        bare = yaml.safe_load(text)  # the check can fail: Ray's defaults, where a node type names neither
        for node in bare["available_node_types"].values():
            del node["node_config"]["IamInstanceProfile"], node["node_config"]["SecurityGroupIds"]
        bare["cluster_name"] = "bare"
        bootstrap_aws(prepare_config(bare))
        assert "ray-autoscaler-v1" in {p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]}
        opened = [p for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] not in before
                  for p in g["IpPermissions"] if {"CidrIp": "0.0.0.0/0"} in p["IpRanges"]]
        assert opened and opened[0]["FromPort"] == 22

        # moto's CloudFormation creates the managed policies but does not attach them (ManagedPolicyArns): attach
        # what the template says, each !Ref resolved to the policy the stack created.
        template = yaml.load((ROOT / "cluster-access.yaml").read_text(), _CfnLoader)["Resources"]
        made = {r["LogicalResourceId"]: r.get("PhysicalResourceId")  # a policy's is its ARN
                for r in cf.describe_stack_resources(StackName="access")["StackResources"] if "LogicalResourceId" in r}
        creds = {}
        for role in ("HeadRole", "WorkerRole"):
            arns = template[role]["Properties"]["ManagedPolicyArns"]
            refs = [a["Ref"] for a in (arns if isinstance(arns, list) else arns["If"][2])]  # WorkersWriteModels=false
            for ref in refs:
                iam.attach_role_policy(RoleName=made[role], PolicyArn=made[ref])
            for name in iam.list_role_policies(RoleName=made[role])["PolicyNames"]:  # moto's CloudFormation stores
                doc = iam.get_role_policy(RoleName=made[role], PolicyName=name)["PolicyDocument"]  # Python's repr,
                doc = ast.literal_eval(doc) if isinstance(doc, str) else doc  # which its IAM evaluator cannot read
                iam.put_role_policy(RoleName=made[role], PolicyName=name, PolicyDocument=json.dumps(doc))
            c = sts.assume_role(RoleArn=iam.get_role(RoleName=made[role])["Role"]["Arn"], RoleSessionName="test")
            creds[role] = c["Credentials"]
        s3 = boto3.client("s3", region_name="us-west-2")
        for bucket in ("lab", "elsewhere"):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        s3.put_object(Bucket="lab", Key="models/seed_0/config.json", Body=b"{}")
        s3.put_object(Bucket="elsewhere", Key="secret", Body=b"x")
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset-auth", data=b"0", method="POST",
                                                      headers={"Content-Type": "text/plain"}))  # IAM enforced now

        def allowed(role, op, **kw) -> bool:
            c = creds[role]
            client = boto3.client("s3", region_name="us-west-2", aws_access_key_id=c["AccessKeyId"],
                                  aws_secret_access_key=c["SecretAccessKey"], aws_session_token=c["SessionToken"])
            try:
                getattr(client, op)(**kw)
                return True
            except botocore.exceptions.ClientError as e:
                assert e.response["Error"]["Code"] == "AccessDenied", e
                return False

        read = dict(Bucket="lab", Key="models/seed_0/config.json")
        for role in creds:
            assert allowed(role, "get_object", **read)
            assert not allowed(role, "put_object", Bucket="lab", Key="models/seed_0/config.json", Body=b"")
            assert not allowed(role, "get_object", Bucket="elsewhere", Key="secret")
            assert not allowed(role, "put_object", Bucket="lab", Key="other/x", Body=b"")
        assert allowed("HeadRole", "put_object", Bucket="lab", Key="results/run1/run.json", Body=b"{}")
        assert allowed("HeadRole", "delete_object", Bucket="lab", Key="results/run1/run.json")
        assert not allowed("WorkerRole", "put_object", Bucket="lab", Key="results/run1/run.json", Body=b"{}")
