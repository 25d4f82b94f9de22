//! The Kubernetes manifests in `deploy/kubernetes` agree with probehost. The
//! example overlay is rendered with `kubectl kustomize` and read back: every
//! probehost command line in it (containers, init containers, exec probes) must
//! be one probehost's own command-line parser accepts, and its probes, ports,
//! timeouts, grace periods and cache volume must fit the configuration in its
//! ConfigMap, as probehost itself parses that file. The file must also pass
//! `probehost config check` with the container's layout reproduced locally.
//!
//! `kubectl` (with kustomize v4 or later) is needed: without it these tests
//! fail, naming it.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use ::probehost::cli::{Cli, Command, ProbeMode, ServeArgs};
use ::probehost::config::Config;
use ::probehost::readiness::Gate;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use serde::Deserialize;
use serde_json::Value;

use crate::harness::{POSTGRES_URL, TestDir, probehost, run};

const OVERLAY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/kubernetes/overlays/example"
);

/// Loopback values for the variables `probehost.toml` reads through `${VAR}`.
/// Parsing and `config check` connect to nothing, so they only need to be well
/// formed; a variable missing here fails the tests, naming it.
const LOOPBACK_ENV: &[(&str, &str)] = &[
    ("DATABASE_URL", POSTGRES_URL),
    ("MEMCACHED_SERVER", "127.0.0.1:11211"),
];

/// The probes a container can have, in the order the kubelet starts them.
const PROBES: [&str; 3] = ["startupProbe", "livenessProbe", "readinessProbe"];

// ----- the rendered manifests -----

/// The overlay's documents, rendered once per test run.
fn documents() -> &'static [Value] {
    static DOCUMENTS: OnceLock<Vec<Value>> = OnceLock::new();
    DOCUMENTS.get_or_init(render)
}

fn render() -> Vec<Value> {
    let output = std::process::Command::new("kubectl")
        .args(["kustomize", OVERLAY])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "kubectl could not be run ({e}): these tests render {OVERLAY} with \
                 `kubectl kustomize` (kustomize v4 or later). Install kubectl, e.g. \
                 `apt-get install -y kubectl`"
            )
        });
    assert!(
        output.status.success(),
        "kubectl kustomize {OVERLAY} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("kubectl kustomize prints UTF-8");
    let documents: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| {
            Value::deserialize(document).unwrap_or_else(|e| {
                panic!("kubectl kustomize printed YAML that does not parse: {e}")
            })
        })
        .filter(|document| !document.is_null())
        .collect();
    assert!(
        documents.len() >= 5,
        "kubectl kustomize {OVERLAY} rendered only {} documents",
        documents.len()
    );
    documents
}

fn text<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {value}"))
}

/// The elements of a list; nothing for an absent one.
fn items(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn strings(value: &Value, what: &str) -> Vec<String> {
    items(value)
        .iter()
        .map(|item| text(item, what).to_owned())
        .collect()
}

fn config_map(name: &str) -> &'static Value {
    documents()
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no ConfigMap {name} in the rendered manifests"))
}

/// Whether a label selector (`matchLabels` form) selects `labels`.
fn selects(selector: &serde_json::Map<String, Value>, labels: &Value) -> bool {
    selector
        .iter()
        .all(|(key, value)| labels[key.as_str()] == *value)
}

/// A pod template of a workload.
#[derive(Debug, Clone, Copy)]
struct Pod {
    workload: &'static Value,
    spec: &'static Value,
    labels: &'static Value,
}

impl Pod {
    fn name(self) -> String {
        format!(
            "{}/{}",
            self.workload["kind"].as_str().unwrap_or("?"),
            self.workload["metadata"]["name"].as_str().unwrap_or("?")
        )
    }

    /// Init containers first, in order, then the containers.
    fn containers(self) -> Vec<Container> {
        let spec: &'static Value = self.spec;
        let init = items(&spec["initContainers"])
            .iter()
            .enumerate()
            .map(move |(at, container)| Container {
                pod: self,
                spec: container,
                init: Some(at),
            });
        let main = items(&spec["containers"])
            .iter()
            .map(move |container| Container {
                pod: self,
                spec: container,
                init: None,
            });
        init.chain(main).collect()
    }

    fn volume(self, name: &str) -> &'static Value {
        let spec: &'static Value = self.spec;
        items(&spec["volumes"])
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("{}: no volume {name}", self.name()))
    }
}

fn pods() -> Vec<Pod> {
    let mut pods = Vec::new();
    for doc in documents() {
        let template = match doc["kind"].as_str() {
            Some("CronJob") => &doc["spec"]["jobTemplate"]["spec"]["template"],
            _ => &doc["spec"]["template"],
        };
        if template["spec"].is_object() {
            pods.push(Pod {
                workload: doc,
                spec: &template["spec"],
                labels: &template["metadata"]["labels"],
            });
        }
    }
    pods
}

#[derive(Debug, Clone, Copy)]
struct Container {
    pod: Pod,
    spec: &'static Value,
    /// Its place among the init containers; `None` for a regular container.
    init: Option<usize>,
}

impl Container {
    fn name(self) -> String {
        let list = match self.init {
            Some(_) => "initContainers",
            None => "containers",
        };
        format!(
            "{} {list}[{}]",
            self.pod.name(),
            self.spec["name"].as_str().unwrap_or("?")
        )
    }

    fn same(self, other: Container) -> bool {
        std::ptr::eq(self.spec, other.spec)
    }

    /// What the container runs: `command` then `args`.
    fn argv(self) -> Vec<String> {
        let mut argv = strings(&self.spec["command"], "command");
        argv.extend(strings(&self.spec["args"], "args"));
        argv
    }

    fn env(self, name: &str) -> Option<&'static Value> {
        let spec: &'static Value = self.spec;
        items(&spec["env"]).iter().find(|e| e["name"] == name)
    }

    /// Every variable the container's environment sets: its `env` and the keys
    /// of the ConfigMaps it takes whole (`envFrom`).
    fn env_names(self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = items(&self.spec["env"])
            .iter()
            .map(|e| text(&e["name"], "env.name").to_owned())
            .collect();
        for source in items(&self.spec["envFrom"]) {
            let prefix = source["prefix"].as_str().unwrap_or("");
            if let Some(name) = source["configMapRef"]["name"].as_str() {
                if let Some(data) = config_map(name)["data"].as_object() {
                    names.extend(data.keys().map(|key| format!("{prefix}{key}")));
                }
            } else if let Some(name) = source["secretRef"]["name"].as_str() {
                panic!(
                    "{}: takes Secret {name} whole (envFrom); its keys are not in the \
                     manifests, so what it sets cannot be checked: name each variable \
                     with a secretKeyRef",
                    self.name()
                );
            }
        }
        names
    }

    /// A probe's or a Service's port, a number or one of the container's port
    /// names, as a number.
    fn port_number(self, port: &Value) -> u16 {
        if let Some(number) = port.as_u64() {
            return u16::try_from(number).expect("a port number");
        }
        let name = text(port, "port");
        let found = items(&self.spec["ports"])
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{}: no port named {name:?}", self.name()));
        found["containerPort"]
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .unwrap_or_else(|| panic!("{}: port {name:?} has no containerPort", self.name()))
    }
}

fn containers() -> Vec<Container> {
    pods().into_iter().flat_map(Pod::containers).collect()
}

fn is_program(argv: &[String], name: &str) -> bool {
    argv.first()
        .and_then(|program| Path::new(program).file_name())
        .is_some_and(|program| program == name)
}

// ----- probehost's command lines and configuration -----

/// A probehost command line in the manifests: a container's command or an
/// exec probe, parsed by probehost's own parser.
#[derive(Debug)]
struct Invocation {
    container: Container,
    /// The probe (`livenessProbe`, ...) for an exec probe; `None` for the
    /// container's command.
    probe: Option<&'static str>,
    argv: Vec<String>,
    cli: Cli,
    /// `--config`, when the command line gives it.
    config_flag: Option<PathBuf>,
}

impl Invocation {
    fn new(container: Container, probe: Option<&'static str>, argv: Vec<String>) -> Invocation {
        let place = Invocation::place(container, probe);
        let matches = Cli::command()
            .try_get_matches_from(argv.iter())
            .unwrap_or_else(|e| panic!("{place}: probehost rejects {argv:?}:\n{e}"));
        let cli = Cli::from_arg_matches(&matches)
            .unwrap_or_else(|e| panic!("{place}: probehost rejects {argv:?}:\n{e}"));
        let config_flag = match matches.value_source("config") {
            Some(ValueSource::CommandLine) => cli.global.config.clone(),
            _ => None,
        };
        Invocation {
            container,
            probe,
            argv,
            cli,
            config_flag,
        }
    }

    /// Where a command line is: its container, and the probe for an exec probe.
    fn place(container: Container, probe: Option<&str>) -> String {
        match probe {
            None => format!("{} command", container.name()),
            Some(probe) => format!("{} {probe} exec", container.name()),
        }
    }

    fn name(&self) -> String {
        Invocation::place(self.container, self.probe)
    }

    /// `run`'s and `serve`'s options: `Some` when this serves probes over HTTP.
    fn serve_args(&self) -> Option<&ServeArgs> {
        match &self.cli.command {
            Command::Serve(args) => Some(args),
            Command::Run(args) => Some(&args.serve),
            _ => None,
        }
    }

    fn probe_mode(&self) -> Option<ProbeMode> {
        match &self.cli.command {
            Command::Probe(args) => args.mode().ok(),
            _ => None,
        }
    }

    /// The config file this probehost reads: `--config`, else `PROBEHOST_CONFIG`
    /// (an exec probe runs with its container's environment), found on a
    /// ConfigMap volume mounted in the container.
    fn config_file(&self) -> ConfigFile {
        let place = self.name();
        let container = self.container;
        let path = self
            .config_flag
            .clone()
            .or_else(|| {
                container
                    .env("PROBEHOST_CONFIG")
                    .and_then(|e| e["value"].as_str())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| {
                panic!(
                    "{place}: neither --config nor PROBEHOST_CONFIG names a config file, \
                     so probehost would run on its built-in defaults"
                )
            });
        assert!(
            path.is_absolute(),
            "{place}: the config path {} is relative to a working directory the \
             image decides",
            path.display()
        );
        // The deepest mount holding the path is the one that shows.
        let mount = items(&container.spec["volumeMounts"])
            .iter()
            .filter(|m| path.starts_with(text(&m["mountPath"], "mountPath")))
            .max_by_key(|m| text(&m["mountPath"], "mountPath").len())
            .unwrap_or_else(|| {
                panic!(
                    "{place}: the config file {} is on no volume mounted in the container",
                    path.display()
                )
            });
        let mount_path = Path::new(text(&mount["mountPath"], "mountPath"));
        let file = match mount["subPath"].as_str().filter(|s| !s.is_empty()) {
            Some(sub_path) if path == mount_path => sub_path.to_owned(),
            Some(_) => panic!(
                "{place}: the config file {} is not the file mounted at {}",
                path.display(),
                mount_path.display()
            ),
            None => path
                .strip_prefix(mount_path)
                .expect("the mount holds the path")
                .to_string_lossy()
                .into_owned(),
        };
        let volume_name = text(&mount["name"], "volumeMounts.name");
        let volume = container.pod.volume(volume_name);
        let name = volume["configMap"]["name"].as_str().unwrap_or_else(|| {
            panic!(
                "{place}: the config file {} is on volume {volume_name}, which is not a ConfigMap",
                path.display()
            )
        });
        let key = match volume["configMap"]["items"].as_array() {
            Some(list) => list
                .iter()
                .find(|item| item["path"] == file.as_str())
                .map(|item| text(&item["key"], "items.key").to_owned())
                .unwrap_or_else(|| {
                    panic!("{place}: ConfigMap volume {volume_name} does not project {file}")
                }),
            None => file,
        };
        let contents = config_map(name)["data"][key.as_str()]
            .as_str()
            .unwrap_or_else(|| {
                panic!(
                    "{place}: reads {} but ConfigMap {name} has no key {key:?}",
                    path.display()
                )
            });
        ConfigFile {
            path,
            config_map: name.to_owned(),
            key,
            contents,
        }
    }

    /// The configuration this probehost runs with, as probehost parses it.
    fn config(&self) -> Config {
        self.config_file().parse()
    }
}

/// Every probehost command line in the manifests.
fn invocations() -> Vec<Invocation> {
    let mut found = Vec::new();
    for container in containers() {
        let argv = container.argv();
        if is_program(&argv, "probehost") {
            found.push(Invocation::new(container, None, argv));
        }
        for probe in PROBES {
            let argv = strings(&container.spec[probe]["exec"]["command"], probe);
            if is_program(&argv, "probehost") {
                found.push(Invocation::new(container, Some(probe), argv));
            }
        }
    }
    assert!(!found.is_empty(), "no probehost command line in {OVERLAY}");
    found
}

/// A config file as a container sees it, and where it comes from.
#[derive(Debug)]
struct ConfigFile {
    path: PathBuf,
    config_map: String,
    key: String,
    contents: &'static str,
}

impl ConfigFile {
    fn parse(&self) -> Config {
        let env: HashMap<String, String> = LOOPBACK_ENV
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        ::probehost::config::parse(self.contents, &self.path, &env).unwrap_or_else(|e| {
            panic!(
                "{} (ConfigMap {}, key {}) is not a valid probehost configuration (a \
                 variable it reads may need a value in LOOPBACK_ENV):\n{e}",
                self.path.display(),
                self.config_map,
                self.key
            )
        })
    }
}

/// The variables a `probehost.toml` reads with `${VAR}` and no fallback.
fn required_variables(contents: &str) -> BTreeSet<String> {
    let document: toml_edit::DocumentMut = contents
        .parse()
        .unwrap_or_else(|e| panic!("probehost.toml is not TOML: {e}"));
    let mut values = Vec::new();
    for (_, item) in document.as_table().iter() {
        toml_strings(item, &mut values);
    }
    values
        .iter()
        .flat_map(|value| references(value.as_str()))
        .collect()
}

fn toml_strings(item: &toml_edit::Item, out: &mut Vec<String>) {
    match item {
        toml_edit::Item::Value(value) => toml_value_strings(value, out),
        toml_edit::Item::Table(table) => {
            for (_, item) in table.iter() {
                toml_strings(item, out);
            }
        }
        toml_edit::Item::ArrayOfTables(tables) => {
            for table in tables.iter() {
                for (_, item) in table.iter() {
                    toml_strings(item, out);
                }
            }
        }
        toml_edit::Item::None => {}
    }
}

fn toml_value_strings(value: &toml_edit::Value, out: &mut Vec<String>) {
    match value {
        toml_edit::Value::String(s) => out.push(s.value().clone()),
        toml_edit::Value::Array(array) => {
            for value in array.iter() {
                toml_value_strings(value, out);
            }
        }
        toml_edit::Value::InlineTable(table) => {
            for (_, value) in table.iter() {
                toml_value_strings(value, out);
            }
        }
        _ => {}
    }
}

/// The names of the `${NAME}` references in `value` that have no
/// `:-fallback`, by probehost's rules (`$$` is a literal `$`).
fn references(value: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            rest = tail;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            rest = after;
            continue;
        };
        let Some(end) = body.find('}') else {
            break;
        };
        let reference = &body[..end];
        if !reference.contains(":-") {
            names.push(reference.to_owned());
        }
        rest = &body[end + 1..];
    }
    names
}

/// The emptyDir mount holding `cache` in `container`: the volume's name, its
/// mount path, and where `cache` is inside it.
fn cache_mount(container: Container, cache: &Path) -> (String, PathBuf, PathBuf) {
    let place = container.name();
    let mount = items(&container.spec["volumeMounts"])
        .iter()
        .filter(|m| cache.starts_with(text(&m["mountPath"], "mountPath")))
        .max_by_key(|m| text(&m["mountPath"], "mountPath").len())
        .unwrap_or_else(|| {
            panic!(
                "{place}: runtime.cache_dir {} is on no mounted volume, and the root \
                 filesystem is read-only",
                cache.display()
            )
        });
    let name = text(&mount["name"], "volumeMounts.name").to_owned();
    assert!(
        container.pod.volume(&name)["emptyDir"].is_object(),
        "{place}: runtime.cache_dir {} is on volume {name}, which is not an emptyDir",
        cache.display()
    );
    assert_ne!(
        mount["readOnly"],
        Value::Bool(true),
        "{place}: the cache volume {name} is mounted read-only"
    );
    let mount_path = PathBuf::from(text(&mount["mountPath"], "mountPath"));
    let inside = cache
        .strip_prefix(&mount_path)
        .expect("the mount holds the cache")
        .to_path_buf();
    assert!(
        !inside.as_os_str().is_empty(),
        "{place}: runtime.cache_dir {} is the emptyDir's mount point itself: an \
         emptyDir's root is root-owned and world-writable, and probehost refuses such \
         a directory; name a directory inside it",
        cache.display()
    );
    (name, mount_path, inside)
}

/// gunicorn's `--bind`, when the command is gunicorn and gives it.
fn gunicorn_bind(command: &[String]) -> Option<String> {
    if !is_program(command, "gunicorn") {
        return None;
    }
    let mut args = command.iter().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--bind" || arg == "-b" {
            return args.next().cloned();
        }
        if let Some(value) = arg.strip_prefix("--bind=") {
            return Some(value.to_owned());
        }
    }
    None
}

/// gunicorn's `--graceful-timeout` (its default is 30 s), when the command is
/// gunicorn.
fn gunicorn_graceful_timeout(command: &[String]) -> Option<Duration> {
    if !is_program(command, "gunicorn") {
        return None;
    }
    let mut seconds: f64 = 30.0;
    let mut args = command.iter().skip(1);
    while let Some(arg) = args.next() {
        let value = if arg == "--graceful-timeout" {
            args.next().cloned()
        } else {
            arg.strip_prefix("--graceful-timeout=").map(str::to_owned)
        };
        if let Some(value) = value {
            seconds = value
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("gunicorn --graceful-timeout {value:?}: {e}"));
        }
    }
    Some(Duration::from_secs_f64(seconds))
}

fn count_files(dir: &Path, extension: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                count_files(&path, extension)
            } else {
                usize::from(path.extension().is_some_and(|e| e == extension))
            }
        })
        .sum()
}

// ----- the tests -----

#[test]
fn every_probehost_command_line_in_the_manifests_is_one_probehost_accepts() {
    let invocations = invocations();
    let commands: BTreeSet<&str> = invocations
        .iter()
        .map(|i| match &i.cli.command {
            Command::Serve(_) => "serve",
            Command::Run(_) => "run",
            Command::Probe(_) => "probe",
            Command::Precompile => "precompile",
            Command::Wait4db(_) => "wait4db",
            Command::Ensureadmin(_) => "ensureadmin",
            Command::Lockedmigrate(_) => "lockedmigrate",
            _ => "other",
        })
        .collect();
    for expected in [
        "run",
        "wait4db",
        "lockedmigrate",
        "precompile",
        "ensureadmin",
        "probe",
    ] {
        assert!(
            commands.contains(expected),
            "no `probehost {expected}` in {OVERLAY}; found {commands:?}"
        );
    }
    // What clap cannot check: `probe` needs exactly one kind of check, and
    // lockedmigrate takes migrate's options or a command after `--`, not both.
    for invocation in &invocations {
        match &invocation.cli.command {
            Command::Probe(args) => {
                if let Err(e) = args.mode() {
                    panic!("{}: {:?}: {e}", invocation.name(), invocation.argv);
                }
            }
            Command::Lockedmigrate(args) => {
                let config = invocation.config();
                if let Err(e) = args.command(&config.jobs.migrate_command) {
                    panic!("{}: {:?}: {e}", invocation.name(), invocation.argv);
                }
            }
            _ => {}
        }
    }
}

#[test]
fn every_probehost_reads_the_config_map_mounted_where_its_config_path_points() {
    let mut files = BTreeSet::new();
    for invocation in invocations() {
        let file = invocation.config_file();
        // It must parse, as probehost will parse it in the pod.
        let config = file.parse();
        assert!(
            !config.probes.is_empty(),
            "{}: no readiness probes",
            invocation.name()
        );
        files.insert((file.path, file.config_map, file.key));
    }
    assert_eq!(
        files.len(),
        1,
        "web, worker and jobs should all read one probehost configuration; they read {files:?}"
    );
}

#[test]
fn every_variable_the_config_reads_is_set_where_probehost_runs() {
    let mut checked = 0;
    for invocation in invocations() {
        let required = required_variables(invocation.config_file().contents);
        let set = invocation.container.env_names();
        let missing: Vec<&String> = required.iter().filter(|v| !set.contains(*v)).collect();
        assert!(
            missing.is_empty(),
            "{}: probehost.toml reads {missing:?} through ${{...}}, which the container's \
             environment does not set (it sets {set:?}); probehost would refuse to start",
            invocation.name()
        );
        checked += required.len();
    }
    assert!(
        checked > 0,
        "probehost.toml reads no ${{VAR}}: where do the database URL and cache address come from?"
    );
}

#[test]
fn http_probes_ask_probehost_on_its_port_for_the_configured_paths() {
    let invocations = invocations();
    let mut checked = 0;
    for container in containers() {
        let http: Vec<(&str, &Value)> = PROBES
            .iter()
            .map(|probe| (*probe, &container.spec[*probe]["httpGet"]))
            .filter(|(_, get)| get.is_object())
            .collect();
        if http.is_empty() {
            continue;
        }
        let server = invocations
            .iter()
            .find(|i| i.probe.is_none() && i.container.same(container) && i.serve_args().is_some())
            .unwrap_or_else(|| {
                panic!(
                    "{}: has HTTP probes but runs neither `probehost run` nor `probehost \
                     serve`: nothing answers them",
                    container.name()
                )
            });
        let config = server.config();
        let listen = server
            .serve_args()
            .and_then(|args| args.listen)
            .unwrap_or(config.server.listen);
        let paths = &config.server;
        for (probe, get) in http {
            let place = format!("{} {probe}", container.name());
            assert_eq!(
                container.port_number(&get["port"]),
                listen.port(),
                "{place}: not probehost's port (it listens on {listen})"
            );
            assert_eq!(
                get["scheme"].as_str().unwrap_or("HTTP"),
                "HTTP",
                "{place}: probehost serves plain HTTP"
            );
            let path = text(&get["path"], &place);
            // Liveness must touch no dependency; a path in both lists is a
            // health path.
            let allowed: Vec<&str> = match probe {
                "livenessProbe" => paths.health_paths.iter().map(String::as_str).collect(),
                "readinessProbe" => paths
                    .ready_paths
                    .iter()
                    .filter(|p| !paths.health_paths.contains(*p))
                    .map(String::as_str)
                    .collect(),
                _ => paths
                    .startup_paths
                    .iter()
                    .chain(&paths.ready_paths)
                    .map(String::as_str)
                    .collect(),
            };
            assert!(
                allowed.contains(&path),
                "{place}: {path} is not one of the paths probehost.toml configures for it: {allowed:?}"
            );
            checked += 1;
        }
        for required in ["livenessProbe", "readinessProbe"] {
            assert!(
                container.spec[required].is_object(),
                "{}: serves probes but has no {required}",
                container.name()
            );
        }
    }
    assert!(
        checked >= 3,
        "expected the web pods' startup, liveness and readiness probes over HTTP; checked {checked}"
    );
}

#[test]
fn the_service_sends_traffic_to_probehost_not_to_the_application() {
    let invocations = invocations();
    let services: Vec<&Value> = documents()
        .iter()
        .filter(|d| d["kind"] == "Service")
        .collect();
    assert!(!services.is_empty(), "no Service in {OVERLAY}");
    for service in services {
        let name = text(&service["metadata"]["name"], "Service name");
        let selector = service["spec"]["selector"]
            .as_object()
            .unwrap_or_else(|| panic!("Service {name} has no selector"));
        let selected: Vec<Pod> = pods()
            .into_iter()
            .filter(|pod| selects(selector, pod.labels))
            .collect();
        assert!(!selected.is_empty(), "Service {name} selects no pod");
        for pod in selected {
            let server = invocations
                .iter()
                .find(|i| {
                    i.probe.is_none()
                        && std::ptr::eq(i.container.pod.spec, pod.spec)
                        && i.serve_args().is_some()
                })
                .unwrap_or_else(|| {
                    panic!(
                        "Service {name} selects {}, where no probehost serves",
                        pod.name()
                    )
                });
            let config = server.config();
            let listen = server
                .serve_args()
                .and_then(|args| args.listen)
                .unwrap_or(config.server.listen)
                .port();
            for port in items(&service["spec"]["ports"]) {
                let target = if port["targetPort"].is_null() {
                    &port["port"]
                } else {
                    &port["targetPort"]
                };
                assert_eq!(
                    server.container.port_number(target),
                    listen,
                    "Service {name} port {}: goes past probehost (it listens on port {listen})",
                    port["port"]
                );
            }
        }
    }
}

#[test]
fn the_application_listens_on_loopback_where_probehost_forwards() {
    let mut checked = 0;
    for invocation in invocations() {
        let Command::Run(args) = &invocation.cli.command else {
            continue;
        };
        let place = invocation.name();
        let config = invocation.config();
        let upstream = args
            .serve
            .upstream
            .clone()
            .or_else(|| config.server.upstream.clone())
            .unwrap_or_else(|| {
                panic!("{place}: no server.upstream: probehost is not in front of the application")
            });
        let url = url::Url::parse(&upstream).expect("probehost accepted the upstream URL");
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name == "localhost",
            None => false,
        };
        assert!(
            loopback,
            "{place}: server.upstream {upstream} is not loopback: the application \
             can be reached without passing probehost"
        );
        let port = url.port_or_known_default().expect("an http URL has a port");
        let address = format!(
            "{}:{port}",
            url.host_str().expect("the upstream has a host")
        );
        let bind = gunicorn_bind(&args.command).unwrap_or_else(|| {
            panic!(
                "{place}: cannot tell where {:?} listens (this test reads gunicorn's --bind)",
                args.command
            )
        });
        assert_eq!(
            bind, address,
            "{place}: the application listens on {bind}, probehost forwards to {upstream}"
        );
        for exposed in items(&invocation.container.spec["ports"]) {
            assert_ne!(
                exposed["containerPort"].as_u64(),
                Some(u64::from(port)),
                "{place}: exposes the application's own port {port}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 1, "no `probehost run` in {OVERLAY}");
}

#[test]
fn exec_probes_run_probe_live_for_liveness_and_probe_ready_for_readiness() {
    let invocations = invocations();
    let mut seen = BTreeSet::new();
    for container in containers() {
        for probe in PROBES {
            let exec = &container.spec[probe]["exec"];
            if !exec.is_object() {
                continue;
            }
            let place = format!("{} {probe}", container.name());
            let invocation = invocations
                .iter()
                .find(|i| i.probe == Some(probe) && i.container.same(container))
                .unwrap_or_else(|| panic!("{place}: runs {}, not probehost", exec["command"]));
            let mode = invocation.probe_mode().unwrap_or_else(|| {
                panic!("{place}: runs {:?}, not `probehost probe`", invocation.argv)
            });
            let expected = match probe {
                "livenessProbe" => ProbeMode::Live,
                _ => ProbeMode::Ready,
            };
            assert_eq!(mode, expected, "{place}: {:?}", invocation.argv);
            seen.insert(probe);
        }
    }
    assert!(
        seen.contains("livenessProbe") && seen.contains("readinessProbe"),
        "expected exec liveness and readiness probes (the worker); found {seen:?}"
    );
}

#[test]
fn every_probe_waits_longer_than_the_readiness_deadline() {
    let invocations = invocations();
    let mut checked = 0;
    for container in containers() {
        // The configuration whose deadline bounds this container's answers.
        let Some(reader) = invocations.iter().find(|i| i.container.same(container)) else {
            continue;
        };
        let deadline = reader.config().readiness.timeout;
        for probe in PROBES {
            let spec = &container.spec[probe];
            if !spec.is_object() {
                continue;
            }
            let place = format!("{} {probe}", container.name());
            // Kubernetes' default is 1 s.
            let timeout = Duration::from_secs(spec["timeoutSeconds"].as_u64().unwrap_or(1));
            assert!(
                timeout > deadline,
                "{place}: timeoutSeconds ({timeout:?}) must exceed readiness.timeout \
                 ({deadline:?}), or the kubelet gives up before probehost answers 503 \
                 with a reason"
            );
            let ready_exec = invocations.iter().any(|i| {
                i.probe == Some(probe)
                    && i.container.same(container)
                    && i.probe_mode() == Some(ProbeMode::Ready)
            });
            if ready_exec {
                // `probe --ready` first asks a probehost serving this
                // configuration (for up to readiness.timeout + 1 s), then
                // evaluates itself within readiness.timeout.
                let worst = deadline * 2 + Duration::from_secs(1);
                assert!(
                    timeout > worst,
                    "{place}: timeoutSeconds ({timeout:?}) must exceed {worst:?}, the \
                     longest `probe --ready` takes with readiness.timeout {deadline:?}"
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 5,
        "expected the web pods' three probes and the worker's two; checked {checked}"
    );
}

#[test]
fn termination_grace_covers_the_drain_the_requests_and_the_application() {
    let mut checked = 0;
    for invocation in invocations() {
        if invocation.probe.is_some() {
            continue;
        }
        let place = invocation.name();
        let config = invocation.config();
        let (drain, grace) = (config.server.drain, config.server.grace);
        let needed = match &invocation.cli.command {
            // Drain, then the requests in flight get the grace.
            Command::Serve(_) => drain + grace,
            // Drain; the requests in flight get the grace; the application
            // gets SIGTERM and the grace before SIGKILL; what it left in its
            // process group gets SIGTERM and the grace before SIGKILL.
            Command::Run(args) => {
                if let Some(own) = gunicorn_graceful_timeout(&args.command) {
                    assert!(
                        own < grace,
                        "{place}: gunicorn's --graceful-timeout ({own:?}) is not below \
                         server.grace ({grace:?}): probehost kills it before it has \
                         finished its requests"
                    );
                }
                drain + grace * 3
            }
            _ => continue,
        };
        let pod = invocation.container.pod;
        // Kubernetes' default is 30 s.
        let given = Duration::from_secs(
            pod.spec["terminationGracePeriodSeconds"]
                .as_u64()
                .unwrap_or(30),
        );
        assert!(
            given >= needed,
            "{}: terminationGracePeriodSeconds is {given:?}; {place} needs {needed:?} \
             (server.drain {drain:?}, server.grace {grace:?}) to stop before the kubelet's \
             SIGKILL",
            pod.name()
        );
        checked += 1;
    }
    assert!(checked >= 1, "no `probehost run` or `serve` in {OVERLAY}");
}

#[test]
fn the_component_cache_is_a_private_directory_inside_a_writable_empty_dir() {
    let invocations = invocations();
    // Per pod: the cache volumes of the probehosts that load components.
    let mut caches: HashMap<String, BTreeSet<(String, PathBuf)>> = HashMap::new();
    for invocation in &invocations {
        let loads = match &invocation.cli.command {
            Command::Run(_) | Command::Serve(_) | Command::Precompile => true,
            Command::Probe(_) => invocation.probe_mode() == Some(ProbeMode::Ready),
            _ => false,
        };
        if !loads {
            continue;
        }
        let cache = invocation.config().runtime.cache_dir.unwrap_or_else(|| {
            panic!(
                "{}: no runtime.cache_dir: every start compiles the components",
                invocation.name()
            )
        });
        assert!(
            cache.is_absolute(),
            "{}: runtime.cache_dir {} is relative",
            invocation.name(),
            cache.display()
        );
        let (volume, mount_path, _) = cache_mount(invocation.container, &cache);
        caches
            .entry(invocation.container.pod.name())
            .or_default()
            .insert((volume, mount_path));
    }
    assert!(
        !caches.is_empty(),
        "no probehost in {OVERLAY} loads components"
    );
    for (pod, volumes) in &caches {
        assert_eq!(
            volumes.len(),
            1,
            "{pod}: its probehosts keep compiled components on different volumes: {volumes:?}"
        );
        let precompiled = invocations.iter().any(|i| {
            i.container.pod.name() == *pod
                && i.container.init.is_some()
                && matches!(i.cli.command, Command::Precompile)
        });
        assert!(
            precompiled,
            "{pod}: no `probehost precompile` init container fills the cache, so the \
             first readiness check (an exec probe with its timeout, too) compiles"
        );
    }
}

#[test]
fn the_config_map_passes_probehost_config_check() {
    let invocations = invocations();
    let server = invocations
        .iter()
        .find(|i| i.probe.is_none() && matches!(i.cli.command, Command::Run(_)))
        .unwrap_or_else(|| panic!("no `probehost run` in {OVERLAY}"));
    let file = server.config_file();
    let config = file.parse();
    let cache = config
        .runtime
        .cache_dir
        .clone()
        .expect("runtime.cache_dir is set");
    let (_, _, inside) = cache_mount(server.container, &cache);

    // The container's layout, locally: the emptyDir is a world-writable
    // directory, and cache_dir is the same path inside it.
    let dir = TestDir::new();
    let empty_dir = dir.path().join("empty-dir");
    std::fs::create_dir(&empty_dir).unwrap();
    std::fs::set_permissions(&empty_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let local_cache = empty_dir.join(inside);
    let mut document: toml_edit::DocumentMut =
        file.contents.parse().expect("probehost.toml is TOML");
    document["runtime"]["cache_dir"] =
        toml_edit::value(local_cache.to_str().expect("a UTF-8 temporary path"));
    let path = dir.config(&document.to_string());

    let output = run(probehost()
        .arg("--config")
        .arg(path)
        .args(["config", "check"])
        .envs(LOOPBACK_ENV.iter().copied()));
    assert_eq!(
        output.code, 0,
        "probehost config check rejects ConfigMap {}'s {}:\n{}{}",
        file.config_map, file.key, output.stdout, output.stderr
    );
    assert!(
        output.stdout.contains(": valid"),
        "probehost config check: {}",
        output.stdout
    );
    assert!(
        output.stderr.is_empty(),
        "probehost config check warns about ConfigMap {}'s {} (a refused cache \
         directory?):\n{}",
        file.config_map,
        file.key,
        output.stderr
    );
    let components: BTreeSet<String> = config
        .probes
        .iter()
        .map(|p| p.component.to_string())
        .collect();
    let compiled = count_files(&local_cache, "cwasm");
    assert_eq!(
        compiled,
        components.len(),
        "the cache at runtime.cache_dir (inside a world-writable emptyDir) holds {compiled} \
         compiled components, not one for each of {components:?}: probehost did not use it"
    );
}

#[test]
fn shared_dependencies_gate_readiness_only_at_startup() {
    // Every replica shares the database and the cache: with gate "always", a
    // blip would empty the Service. New pods must still wait for them.
    let invocations = invocations();
    let server = invocations
        .iter()
        .find(|i| i.probe.is_none() && matches!(i.cli.command, Command::Run(_)))
        .unwrap_or_else(|| panic!("no `probehost run` in {OVERLAY}"));
    let config = server.config_file().parse();
    let shared: Vec<_> = config
        .probes
        .iter()
        .filter(|p| !p.databases.is_empty() || !p.caches.is_empty())
        .collect();
    assert!(
        !shared.is_empty(),
        "no probe checks the database or the cache"
    );
    for probe in shared {
        assert_eq!(
            probe.gate,
            Gate::Startup,
            "probes.{} checks a dependency every replica shares: gate = \"startup\"",
            probe.name
        );
    }
}

#[test]
fn ensureadmin_takes_its_password_from_a_secret_not_the_command_line() {
    let mut checked = 0;
    for invocation in invocations() {
        let Command::Ensureadmin(args) = &invocation.cli.command else {
            continue;
        };
        let place = invocation.name();
        let container = invocation.container;
        assert!(
            args.password.is_none(),
            "{place}: the password is on the command line, where process listings show it"
        );
        let password = container
            .env("DJANGO_ADMIN_PASSWORD")
            .unwrap_or_else(|| panic!("{place}: DJANGO_ADMIN_PASSWORD is not set"));
        let secret = &password["valueFrom"]["secretKeyRef"];
        assert!(
            secret["name"].is_string() && secret["key"].is_string() && password["value"].is_null(),
            "{place}: DJANGO_ADMIN_PASSWORD does not come from a Secret: {password}"
        );
        assert!(
            args.username.is_some() || container.env("DJANGO_ADMIN_USERNAME").is_some(),
            "{place}: no username (--username or DJANGO_ADMIN_USERNAME)"
        );
        checked += 1;
    }
    assert!(checked >= 1, "no `probehost ensureadmin` in {OVERLAY}");
}

#[test]
fn pods_wait_for_the_database_then_migrate_under_the_lock_without_prompting() {
    let invocations = invocations();
    let mut checked = 0;
    for invocation in &invocations {
        let Command::Lockedmigrate(args) = &invocation.cli.command else {
            continue;
        };
        let place = invocation.name();
        let command = args
            .command(&invocation.config().jobs.migrate_command)
            .unwrap_or_else(|e| panic!("{place}: {e}"));
        assert!(
            command.iter().any(|a| a == "migrate")
                && command
                    .iter()
                    .any(|a| a == "--noinput" || a == "--no-input"),
            "{place}: runs {command:?}; expected Django's migrate with --noinput (nobody \
             answers a prompt in a pod)"
        );
        let at = invocation.container.init.unwrap_or_else(|| {
            panic!("{place}: is not an init container: the application could start before its migrations")
        });
        let waited = invocations.iter().any(|other| {
            matches!(other.cli.command, Command::Wait4db(_))
                && std::ptr::eq(other.container.pod.spec, invocation.container.pod.spec)
                && other.container.init.is_some_and(|other_at| other_at < at)
        });
        assert!(
            waited,
            "{place}: no `probehost wait4db` init container runs before it"
        );
        checked += 1;
    }
    assert!(
        checked >= 2,
        "expected lockedmigrate in the web pods and before ensureadmin; found {checked}"
    );
    for invocation in &invocations {
        if let Command::Wait4db(args) = &invocation.cli.command {
            assert!(
                args.timeout > 0.0
                    && args.stable > 0.0
                    && args.interval > 0.0
                    && args.stable < args.timeout,
                "{}: wait4db --timeout {} --stable {} --interval {} cannot succeed",
                invocation.name(),
                args.timeout,
                args.stable,
                args.interval
            );
        }
    }
}

/// A security setting of a container, else of its pod.
fn security(container: Container, key: &str) -> &'static Value {
    let spec: &'static Value = container.spec;
    let own = &spec["securityContext"][key];
    if own.is_null() {
        let pod: &'static Value = container.pod.spec;
        &pod["securityContext"][key]
    } else {
        own
    }
}

#[test]
fn every_container_runs_unprivileged_on_a_read_only_root_filesystem() {
    let all = containers();
    assert!(
        all.len() >= 8,
        "expected the web, worker and job containers; found {}",
        all.len()
    );
    for container in all {
        let place = container.name();
        let own = &container.spec["securityContext"];
        assert_eq!(
            security(container, "runAsNonRoot"),
            &Value::Bool(true),
            "{place}: runAsNonRoot"
        );
        assert_ne!(
            security(container, "runAsUser"),
            &Value::from(0),
            "{place}: runs as root"
        );
        assert_eq!(
            own["readOnlyRootFilesystem"],
            Value::Bool(true),
            "{place}: readOnlyRootFilesystem"
        );
        assert_eq!(
            own["allowPrivilegeEscalation"],
            Value::Bool(false),
            "{place}: allowPrivilegeEscalation"
        );
        let dropped = strings(&own["capabilities"]["drop"], "capabilities.drop");
        assert!(
            dropped.iter().any(|c| c == "ALL") && own["capabilities"]["add"].is_null(),
            "{place}: capabilities: {}",
            own["capabilities"]
        );
        assert_eq!(
            security(container, "seccompProfile")["type"],
            "RuntimeDefault",
            "{place}: seccompProfile"
        );
    }
}

#[test]
fn the_disruption_budget_covers_the_web_pods_and_lets_one_go() {
    let budgets: Vec<&Value> = documents()
        .iter()
        .filter(|d| d["kind"] == "PodDisruptionBudget")
        .collect();
    assert!(!budgets.is_empty(), "no PodDisruptionBudget in {OVERLAY}");
    for budget in budgets {
        let name = text(&budget["metadata"]["name"], "PodDisruptionBudget name");
        let selector = budget["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap_or_else(|| panic!("PodDisruptionBudget {name} has no matchLabels"));
        let covered: Vec<Pod> = pods()
            .into_iter()
            .filter(|pod| selects(selector, pod.labels))
            .collect();
        assert!(
            !covered.is_empty(),
            "PodDisruptionBudget {name} covers no pod"
        );
        for pod in covered {
            let replicas = pod.workload["spec"]["replicas"].as_u64().unwrap_or(1);
            let spec = &budget["spec"];
            let evictable = match (
                spec["maxUnavailable"].as_u64(),
                spec["minAvailable"].as_u64(),
            ) {
                (Some(max), _) => max,
                (None, Some(min)) => replicas.saturating_sub(min),
                _ => panic!(
                    "PodDisruptionBudget {name}: give an integer maxUnavailable or minAvailable"
                ),
            };
            assert!(
                evictable >= 1,
                "PodDisruptionBudget {name} lets no pod of {} go: node drains would hang",
                pod.name()
            );
            assert!(
                replicas > evictable,
                "PodDisruptionBudget {name}: {} has {replicas} replicas and {evictable} may \
                 go at once, leaving none to serve",
                pod.name()
            );
        }
    }
}
