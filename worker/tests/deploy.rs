//! The files under deploy/ hold together: the Kubernetes manifests parse, their workloads select
//! their own pods, mount only volumes they declare, serve the ports their probes and services
//! name, ask for a GPU per worker with time to hand a job back, and set only the variables and
//! flags the binaries have; the PostgreSQL overlay's patches apply to the base; the Slurm script
//! is valid bash that requeues, asks for SIGTERM before its time limit, runs the worker as a job
//! step and exports only the worker's variables.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;
use serde::Deserialize;
use serde_yaml::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The variables the worker binary reads: `[env: NAME=` in its help.
fn worker_variables() -> BTreeSet<String> {
    let help = Command::new(env!("CARGO_BIN_EXE_worker")).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let names: BTreeSet<String> =
        help.split("[env: ").skip(1).map(|rest| rest.split(['=', ']']).next().unwrap().to_owned()).collect();
    assert!(names.contains("SWEEP_COORDINATOR") && names.contains("SWEEP_KERNEL_CACHE"), "{names:?}");
    names
}

/// The variables and long flags of `coordinator <subcommand>`.
fn coordinator_arguments(subcommand: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let cli = coordinator::cli::Cli::command();
    let sub = cli.find_subcommand(subcommand).unwrap_or_else(|| panic!("no coordinator {subcommand}"));
    let variables = sub.get_arguments().filter_map(|a| a.get_env()).map(|e| e.to_string_lossy().into_owned());
    let flags = sub.get_arguments().filter_map(|a| a.get_long()).map(|l| format!("--{l}"));
    (variables.collect(), flags.collect())
}

fn documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(deploy().join("k8s").join(file)).unwrap();
    serde_yaml::Deserializer::from_str(&text).map(|d| Value::deserialize(d).unwrap()).collect()
}

fn text<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(value, |v, key| &v[*key])
        .as_str()
        .unwrap_or_else(|| panic!("{} is not text in {value:?}", path.join(".")))
}

fn list<'a>(value: &'a Value, path: &[&str]) -> Vec<&'a Value> {
    path.iter().fold(value, |v, key| &v[*key]).as_sequence().map(|s| s.iter().collect()).unwrap_or_default()
}

fn names(items: Vec<&Value>) -> BTreeSet<String> {
    items.iter().map(|i| text(i, &["name"]).to_owned()).collect()
}

/// Checks one Deployment or StatefulSet; returns its pod labels and named container ports.
fn check_workload(doc: &Value) -> (Value, BTreeSet<String>) {
    let kind = text(doc, &["kind"]);
    let spec = &doc["spec"];
    let pod = &spec["template"];
    let labels = pod["metadata"]["labels"].clone();
    for (key, value) in spec["selector"]["matchLabels"].as_mapping().expect("matchLabels") {
        assert_eq!(&labels[key], value, "{kind}: its selector must match its own pods");
    }
    let mut volumes = names(list(pod, &["spec", "volumes"]));
    volumes.extend(
        list(spec, &["volumeClaimTemplates"]).iter().map(|t| text(t, &["metadata", "name"]).to_owned()),
    );
    let mut ports = BTreeSet::new();
    let containers = [list(pod, &["spec", "containers"]), list(pod, &["spec", "initContainers"])].concat();
    for container in containers {
        let name = text(container, &["name"]);
        assert!(!text(container, &["image"]).is_empty());
        for mount in list(container, &["volumeMounts"]) {
            assert!(volumes.contains(text(mount, &["name"])), "{name} mounts an undeclared volume");
        }
        ports.extend(names(list(container, &["ports"])));
        let variables: BTreeSet<String> = names(list(container, &["env"]));
        let known = match name {
            "worker" => worker_variables(),
            "coordinator" => {
                let args: Vec<&str> =
                    list(container, &["args"]).iter().map(|a| a.as_str().unwrap()).collect();
                let (variables, flags) = coordinator_arguments(args[0]);
                for flag in args.iter().filter(|a| a.starts_with("--")) {
                    assert!(flags.contains(*flag), "coordinator {} has no {flag}", args[0]);
                }
                variables
            }
            _ => continue,
        };
        let unknown: Vec<&String> =
            variables.iter().filter(|v| v.starts_with("SWEEP_") && !known.contains(*v)).collect();
        assert!(unknown.is_empty(), "{name} does not read {unknown:?}");
        for probe in ["readinessProbe", "livenessProbe"] {
            if let Some(port) = container[probe]["httpGet"]["port"].as_str() {
                assert!(ports.contains(port), "{name}'s {probe} names port {port}, which it does not serve");
                assert_eq!(text(&container[probe], &["httpGet", "path"]), "/healthz");
            }
        }
    }
    (labels, ports)
}

#[test]
fn the_kubernetes_manifests_hold_together() {
    let kustomization = &documents("kustomization.yaml")[0];
    let mut docs = Vec::new();
    for file in list(kustomization, &["resources"]) {
        docs.extend(documents(file.as_str().unwrap()));
    }
    let images: BTreeSet<&str> =
        list(kustomization, &["images"]).iter().map(|i| text(i, &["name"])).collect();
    let mut workloads = Vec::new();
    for doc in &docs {
        assert!(!text(doc, &["apiVersion"]).is_empty() && !text(doc, &["metadata", "name"]).is_empty());
        if matches!(text(doc, &["kind"]), "Deployment" | "StatefulSet") {
            let pod = &doc["spec"]["template"]["spec"];
            for container in [list(pod, &["containers"]), list(pod, &["initContainers"])].concat() {
                assert!(images.contains(text(container, &["image"])), "kustomization names every image");
            }
            workloads.push((text(doc, &["metadata", "name"]).to_owned(), check_workload(doc)));
        }
    }
    let worker =
        docs.iter().find(|d| d["metadata"]["name"] == "sweep-worker" && d["kind"] == "Deployment").unwrap();
    let pod = &worker["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"].as_u64(), Some(1));
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(grace >= 60, "a stopping worker needs time to end its epoch and hand its job back: {grace}");

    for service in docs.iter().filter(|d| d["kind"] == "Service") {
        let selector = service["spec"]["selector"].as_mapping().unwrap();
        let (_, (_, ports)) = workloads
            .iter()
            .find(|(_, (labels, _))| selector.iter().all(|(k, v)| &labels[k] == v))
            .expect("a service selects a workload's pods");
        for port in list(service, &["spec", "ports"]) {
            let target = text(port, &["targetPort"]);
            assert!(ports.contains(target), "service port {target} is not a container port");
        }
    }
}

#[test]
fn the_slurm_script_requeues_and_hands_jobs_back() {
    let path = deploy().join("slurm/sweep-worker.sbatch");
    let syntax = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(syntax.status.success(), "{}", String::from_utf8_lossy(&syntax.stderr));
    let script = std::fs::read_to_string(&path).unwrap();
    for line in ["#SBATCH --requeue", "#SBATCH --signal=TERM@"] {
        assert!(script.lines().any(|l| l.starts_with(line)), "missing {line}");
    }
    // A job step is what Slurm signals at preemption and before the time limit.
    assert!(script.lines().any(|l| l.starts_with("exec srun ") && l.contains("/worker\"")));
    let known = worker_variables();
    let exported: Vec<&str> = script
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("export "))
        .map(|l| l.split('=').next().unwrap())
        .collect();
    assert!(exported.len() >= 8, "{exported:?}");
    let unknown: Vec<&&str> =
        exported.iter().filter(|v| v.starts_with("SWEEP_") && !known.contains(**v)).collect();
    assert!(unknown.is_empty(), "the worker does not read {unknown:?}");
}

/// Applies the JSON-patch operations kustomize would (`test`, `replace`, `add` with `-` for the
/// end of a list) to `doc`, failing where a path does not exist or a `test` does not hold.
fn json_patch(doc: &mut Value, ops: &Value) {
    for op in ops.as_sequence().expect("a list of operations") {
        let path: Vec<&str> = text(op, &["path"]).split('/').skip(1).collect();
        let (last, parents) = path.split_last().unwrap();
        let parent = parents.iter().fold(&mut *doc, |v, key| match key.parse::<usize>() {
            Ok(i) => v.get_mut(i).unwrap_or_else(|| panic!("no {} in the base", text(op, &["path"]))),
            Err(_) => v.get_mut(*key).unwrap_or_else(|| panic!("no {} in the base", text(op, &["path"]))),
        });
        let value = op["value"].clone();
        match (text(op, &["op"]), parent, last.parse::<usize>()) {
            ("add", Value::Sequence(items), _) if *last == "-" => items.push(value),
            ("test", parent, _) => assert_eq!(parent[*last], value, "test of {}", text(op, &["path"])),
            ("replace", Value::Sequence(items), Ok(i)) => items[i] = value,
            ("replace", Value::Mapping(map), Err(_)) if map.contains_key(*last) => {
                map.insert(Value::from(*last), value);
            }
            (other, _, _) => panic!("cannot {other} {}", text(op, &["path"])),
        }
    }
}

#[test]
fn the_postgres_overlay_patches_what_the_base_holds() {
    let overlay = &documents("postgres/kustomization.yaml")[0];
    let resources: Vec<&str> = list(overlay, &["resources"]).iter().map(|r| r.as_str().unwrap()).collect();
    assert_eq!(resources, ["../", "checkpoints.yaml"]);
    let claim = &documents("postgres/checkpoints.yaml")[0];
    assert_eq!(text(claim, &["kind"]), "PersistentVolumeClaim");
    assert_eq!(
        list(claim, &["spec", "accessModes"])[0].as_str(),
        Some("ReadWriteMany"),
        "shared by the replicas"
    );

    let patch = &list(overlay, &["patches"])[0];
    let mut coordinator = documents("coordinator.yaml")
        .into_iter()
        .find(|d| d["kind"].as_str() == Some(text(patch, &["target", "kind"])))
        .expect("the patched workload is in the base");
    assert_eq!(text(&coordinator, &["metadata", "name"]), text(patch, &["target", "name"]));
    let ops: Value = serde_yaml::from_str(text(patch, &["patch"])).unwrap();
    json_patch(&mut coordinator, &ops);
    check_workload(&coordinator);

    let pod = &coordinator["spec"]["template"]["spec"];
    assert_eq!(coordinator["spec"]["replicas"].as_u64(), Some(2));
    let url = &list(&pod["containers"][0], &["env"])[0];
    assert_eq!(text(url, &["name"]), "SWEEP_DATABASE_URL");
    assert_eq!(text(url, &["valueFrom", "secretKeyRef", "name"]), "sweep-postgres");
    let volume = list(pod, &["volumes"]).into_iter().find(|v| v["name"] == "checkpoints").unwrap();
    assert_eq!(text(volume, &["persistentVolumeClaim", "claimName"]), text(claim, &["metadata", "name"]));
}
