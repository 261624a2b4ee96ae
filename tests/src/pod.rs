//! The DaemonSet's pod, played with runc: the image `cargo xtask image` builds, unpacked with
//! umoci, and run with what a kubelet makes of the container in
//! `packaging/kubernetes/daemonset.yaml`: its command and environment (`status.hostIP` from the
//! test), its capabilities, read-only root and privilege escalation, its Localhost seccomp
//! profile (from `packaging/kubernetes/seccomp/`, the kubelet's seccomp directory), its
//! volumes (the host's bpffs becomes a bpffs of the test's own, the ConfigMap a directory of
//! its files) and the host's network (a namespace of the test's).
//!
//! Only what the manifest uses is played; anything else in it fails the test rather than
//! being skipped.

use std::{
    collections::BTreeMap,
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::netns::{NetNs, run};

/// The objects of `daemonset.yaml`, as JSON (PyYAML, which kubernetes-validate brings, reads
/// the YAML).
fn objects() -> Vec<Value> {
    let out = run(Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)",
        ])
        .arg(crate::packaging("kubernetes").join("daemonset.yaml")));
    serde_json::from_slice(&out.stdout).expect("the manifests as JSON")
}

/// The container image's OCI layout and tag: `MCFILTER_IMAGE` (`cargo xtask test` builds the
/// image around the binary under test and sets it), else `cargo xtask image`'s.
fn image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        if let Ok(image) = std::env::var("MCFILTER_IMAGE") {
            return image;
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        run(Command::new(cargo)
            .args(["xtask", "image"])
            .current_dir(&root)
            .stdout(Stdio::null()));
        format!(
            "{}:{}",
            root.join("target/image/oci").display(),
            env!("CARGO_PKG_VERSION")
        )
    })
}

/// What the pod gets from the test: the node it runs on.
pub struct Node<'a> {
    /// The namespace that plays the node's network (`hostNetwork: true`).
    pub netns: &'a NetNs,
    /// The node's address (`status.hostIP`).
    pub ip: IpAddr,
}

/// A running pod: its runc container, its bundle and its bpffs, all removed on drop.
pub struct Pod {
    id: String,
    dir: PathBuf,
    bpffs: PathBuf,
    child: Option<Child>,
    /// The ConfigMap's name (its files are in a directory of that name).
    config_map: String,
    /// The container's HTTP probes, as URLs on the node's address.
    pub liveness: String,
    pub readiness: String,
    /// The metrics port's URL.
    pub metrics: String,
}

impl Pod {
    /// Starts the DaemonSet's pod on `node`; `seccomp` may change the Localhost profile
    /// before it is applied (a test of the profile itself).
    pub fn start(node: &Node<'_>, seccomp: impl FnOnce(&mut Value)) -> Pod {
        let objects = objects();
        let kind = |kind: &str| {
            objects
                .iter()
                .find(|object| object["kind"] == kind)
                .unwrap_or_else(|| panic!("no {kind} in daemonset.yaml"))
        };
        let pod = &kind("DaemonSet")["spec"]["template"]["spec"];
        let config_map = kind("ConfigMap");
        assert_eq!(pod["hostNetwork"], true, "the pod is on the host's network");
        let containers = pod["containers"].as_array().expect("containers");
        assert_eq!(containers.len(), 1, "one container");
        let container = &containers[0];

        let id = crate::unique("pod");
        let dir = std::env::temp_dir().join(&id);
        let bundle = dir.join("bundle");
        fs::create_dir_all(&dir).expect("pod dir");
        run(Command::new("umoci")
            .args(["unpack", "--image", image()])
            .arg(&bundle)
            .stdout(Stdio::null()));
        let bpffs = dir.join("bpffs");
        fs::create_dir_all(&bpffs).expect("bpffs dir");
        run(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&bpffs));
        let mut pod_guard = Pod {
            id,
            dir,
            bpffs,
            child: None,
            config_map: config_map["metadata"]["name"]
                .as_str()
                .expect("the ConfigMap's name")
                .to_owned(),
            liveness: String::new(),
            readiness: String::new(),
            metrics: String::new(),
        };

        let config_path = bundle.join("config.json");
        let mut spec: Value =
            serde_json::from_str(&fs::read_to_string(&config_path).expect("config.json"))
                .expect("the bundle's spec");
        let image_args = spec["process"]["args"].as_array().expect("args").clone();
        let process = &mut spec["process"];
        process["terminal"] = json!(false);
        process["args"] = json!(command(container, &image_args));
        process["env"] = json!(environment(
            container,
            process["env"].as_array().expect("env"),
            node.ip
        ));
        let context = &container["securityContext"];
        security_context(&mut spec, context);
        if let Some(object) = spec.as_object_mut() {
            object.remove("hostname");
        }
        let mut profile = seccomp_profile(context, pod);
        seccomp(&mut profile);
        spec["linux"]["seccomp"] = profile;
        for namespace in spec["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces")
        {
            if namespace["type"] == "network" {
                namespace["path"] = json!(node.netns.path());
            }
        }
        let mounts = volume_mounts(container, pod, config_map, &pod_guard.bpffs, &pod_guard.dir);
        spec["mounts"]
            .as_array_mut()
            .expect("mounts")
            .extend(mounts);
        fs::write(&config_path, spec.to_string()).expect("write config.json");

        let port = |name: &Value| -> u64 {
            container["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .find(|port| &port["name"] == name)
                .and_then(|port| port["containerPort"].as_u64())
                .unwrap_or_else(|| panic!("no port {name}"))
        };
        let probe = |probe: &str| {
            let get = &container[probe]["httpGet"];
            format!(
                "http://{}:{}{}",
                node.ip,
                port(&get["port"]),
                get["path"].as_str().expect("a probe path")
            )
        };
        pod_guard.liveness = probe("livenessProbe");
        pod_guard.readiness = probe("readinessProbe");
        pod_guard.metrics = format!("http://{}:{}/metrics", node.ip, port(&json!("metrics")));
        let log = fs::File::create(pod_guard.dir.join("log")).expect("log");
        pod_guard.child = Some(
            Command::new("runc")
                .args(["run", "--bundle"])
                .arg(&bundle)
                .arg(&pod_guard.id)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("runc run"),
        );
        pod_guard
    }

    /// Where the ConfigMap's `file` is on the host: writing it is the ConfigMap's update.
    pub fn config_map_file(&self, file: &str) -> PathBuf {
        self.dir.join(&self.config_map).join(file)
    }

    /// What the container wrote (stdout and stderr) and runc with it.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// The container's process on the host, while it runs (`runc state`).
    pub fn pid(&self) -> u32 {
        let out = run(Command::new("runc").args(["state", &self.id]));
        let state: Value = serde_json::from_slice(&out.stdout).expect("runc state");
        let pid = state["pid"].as_u64().expect("a pid");
        u32::try_from(pid).expect("a pid")
    }

    /// The process's exit status once it ended within `limit`.
    pub fn exited_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("wait for runc") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the pod as the kubelet does (SIGTERM) and returns how its process ended (within
    /// 30 s, the default grace period).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let _ = Command::new("runc")
            .args(["kill", &self.id, "TERM"])
            .status();
        self.exited_within(Duration::from_secs(30))
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("runc")
                .args(["kill", &self.id, "KILL"])
                .status();
            let _ = child.wait();
        }
        let _ = Command::new("runc")
            .args(["delete", "--force", &self.id])
            .output();
        let _ = Command::new("umount").arg(&self.bpffs).status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The container's `securityContext` in the runtime spec: not privileged, every capability
/// dropped but those added (bounding, effective and permitted), no privilege escalation
/// (no_new_privs), a read-only root.
fn security_context(spec: &mut Value, context: &Value) {
    assert_eq!(context["privileged"], false, "not privileged");
    assert_eq!(
        context["capabilities"]["drop"],
        json!(["ALL"]),
        "every capability dropped but those added"
    );
    let capabilities: Vec<String> = context["capabilities"]["add"]
        .as_array()
        .expect("capabilities added")
        .iter()
        .map(|cap| format!("CAP_{}", cap.as_str().expect("a capability")))
        .collect();
    let process = &mut spec["process"];
    process["capabilities"] = json!({
        "bounding": capabilities,
        "effective": capabilities,
        "permitted": capabilities,
        "inheritable": [],
        "ambient": [],
    });
    process["noNewPrivileges"] = json!(context["allowPrivilegeEscalation"] == false);
    spec["root"]["readonly"] = json!(context["readOnlyRootFilesystem"] == true);
}

/// The container's volume mounts as bind mounts: the host's bpffs is `bpffs`, the ConfigMap a
/// directory of its files under `dir`.
fn volume_mounts(
    container: &Value,
    pod: &Value,
    config_map: &Value,
    bpffs: &Path,
    dir: &Path,
) -> Vec<Value> {
    let volumes = pod["volumes"].as_array().expect("volumes");
    let mut mounts = Vec::new();
    for mount in container["volumeMounts"].as_array().expect("volume mounts") {
        let name = &mount["name"];
        let volume = volumes
            .iter()
            .find(|volume| &volume["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"));
        let source = if volume["hostPath"]["path"] == "/sys/fs/bpf" {
            bpffs.to_owned()
        } else if let Some(map) = volume["configMap"]["name"].as_str() {
            assert_eq!(config_map["metadata"]["name"], map, "the ConfigMap");
            let files = dir.join(map);
            fs::create_dir_all(&files).expect("configmap dir");
            for (file, text) in config_map["data"].as_object().expect("data") {
                fs::write(files.join(file), text.as_str().expect("text")).expect("write");
            }
            files
        } else {
            panic!("a volume the test does not play: {volume}");
        };
        let mut options = vec!["rbind", "nosuid", "nodev", "noexec"];
        if mount["readOnly"] == true {
            options.push("ro");
        }
        mounts.push(json!({
            "destination": mount["mountPath"],
            "type": "bind",
            "source": source,
            "options": options,
        }));
    }
    mounts
}

/// The process's arguments: the container's `command` or the image's entrypoint (its first
/// argument here), then the container's `args`.
fn command(container: &Value, image_args: &[Value]) -> Vec<Value> {
    let mut command = match container["command"].as_array() {
        Some(command) => command.clone(),
        None => image_args[..1].to_vec(),
    };
    command.extend(
        container["args"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| image_args[1..].to_vec()),
    );
    command
}

/// The image's environment and the container's, `$(NAME)` expanded from variables before it
/// and `status.hostIP` from the node.
fn environment(container: &Value, image_env: &[Value], host_ip: IpAddr) -> Vec<String> {
    let mut env: BTreeMap<String, String> = image_env
        .iter()
        .filter_map(|pair| pair.as_str()?.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    for variable in container["env"].as_array().into_iter().flatten() {
        let name = variable["name"].as_str().expect("a name").to_owned();
        let value = if let Some(value) = variable["value"].as_str() {
            env.iter().fold(value.to_owned(), |value, (name, known)| {
                value.replace(&format!("$({name})"), known)
            })
        } else {
            let field = &variable["valueFrom"]["fieldRef"]["fieldPath"];
            assert_eq!(field, "status.hostIP", "a field the test does not play");
            host_ip.to_string()
        };
        env.insert(name, value);
    }
    env.into_iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect()
}

/// The container's (or else the pod's) Localhost seccomp profile, from the kubelet's seccomp
/// directory (`packaging/kubernetes/seccomp`), as the runtime spec's `linux.seccomp`.
fn seccomp_profile(context: &Value, pod: &Value) -> Value {
    let profile = match &context["seccompProfile"] {
        Value::Null => &pod["securityContext"]["seccompProfile"],
        profile => profile,
    };
    assert_eq!(profile["type"], "Localhost", "a Localhost seccomp profile");
    let file = crate::packaging("kubernetes").join("seccomp").join(
        profile["localhostProfile"]
            .as_str()
            .expect("a profile path"),
    );
    let profile: Value = serde_json::from_str(&fs::read_to_string(&file).expect("the profile"))
        .expect("the profile is JSON");
    // The fields the runtime spec shares with the profile format; anything else (archMap,
    // includes, ...) would need translating, which this does not do.
    for key in profile.as_object().expect("an object").keys() {
        assert!(
            [
                "defaultAction",
                "defaultErrnoRet",
                "architectures",
                "syscalls"
            ]
            .contains(&key.as_str()),
            "a profile field the test does not translate: {key}"
        );
    }
    profile
}
