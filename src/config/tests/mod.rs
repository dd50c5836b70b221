//! Config loading tests: every problem reported with its path, defaults, and the
//! committed example configs and schema.

#![allow(clippy::unwrap_used)]

mod committed;

use super::*;

const SECRETS: &str = "app: {username: app, password: pw1}\nmon: {username: mon, password: pw2}\n";

const MINIMAL: &str = "
endpoints:
  - name: writer
    listen: 127.0.0.1:6432
    target_group: pg
target_groups:
  pg:
    engine: postgres
    instances: [127.0.0.1:5432]
auth:
  - username: app
    secret: file:secrets.yaml#app
";

/// A directory holding `secrets.yaml`, for configs to point at.
fn secrets_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secrets.yaml"), SECRETS).unwrap();
    dir
}

/// Parses `text` and returns its problems as `path: message` lines.
fn problems(text: &str) -> Vec<String> {
    let dir = secrets_dir();
    match parse(text, dir.path()) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

fn paths(text: &str) -> Vec<String> {
    let dir = secrets_dir();
    let errors = parse(text, dir.path()).unwrap_err();
    errors.0.into_iter().map(|p| p.path).collect()
}

fn one_problem(text: &str) -> String {
    let found = problems(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    found.into_iter().next().unwrap()
}

#[test]
fn minimal_config_gets_the_documented_defaults() {
    let dir = secrets_dir();
    let config = parse(MINIMAL, dir.path()).unwrap();
    let e = &config.endpoints[0];
    assert_eq!(
        (e.role, e.require_tls, e.allowed_cidrs.len()),
        (Role::ReadWrite, false, 0)
    );
    let g = &config.target_groups["pg"];
    assert_eq!(g.monitor_user, None);
    let pool = &g.connection_pool;
    assert_eq!(
        (pool.max_connections, pool.max_connections_percent),
        (None, None)
    );
    assert_eq!(pool.max_idle_connections_percent, 50);
    assert_eq!(pool.connection_borrow_timeout, Duration::from_secs(120));
    assert_eq!(pool.idle_timeout, Duration::from_secs(600));
    assert_eq!(pool.max_connection_lifetime, Duration::from_secs(3600));
    assert_eq!(pool.connect_timeout, Duration::from_secs(5));
    assert_eq!(pool.tcp_user_timeout, Duration::from_secs(30));
    assert_eq!(pool.init_query, "");
    assert_eq!(g.health, Health::default());
    assert_eq!(g.health.interval, Duration::from_secs(1));
    assert_eq!(g.health.timeout, Duration::from_secs(2));
    assert_eq!(
        (g.health.unhealthy_threshold, g.health.healthy_threshold),
        (3, 2)
    );
    assert_eq!(g.health.max_replica_lag, Duration::from_secs(30));
    let a = &config.auth[0];
    assert_eq!(a.client_auth, ClientAuth::Password);
    assert_eq!(
        a.client_password_auth_type,
        PasswordAuthType::PostgresScramSha256
    );
    let expected = SecretRef::File {
        path: dir.path().join("secrets.yaml"),
        key: "app".into(),
    };
    assert_eq!(
        a.secret, expected,
        "relative secret paths resolve against base_dir"
    );
    assert_eq!(config.admin, None);
    assert_eq!(config.idle_client_timeout, Duration::from_secs(30 * 60));
}

#[test]
fn four_problems_in_four_sections_are_all_reported() {
    let text = MINIMAL
        .replace(
            "    target_group: pg\n",
            "    target_group: pg\n    colour: blue\n",
        )
        .replace(
            "    instances:",
            "    health: {interval: 5 seconds}\n    instances:",
        )
        .replace(
            "    secret: file:",
            "    client_auth: jwt\n    secret: file:",
        )
        + "idle_client_timeout: 0s\nidle_client_park_after: 500ms\n";
    assert_eq!(
        paths(&text),
        [
            "endpoints[0].colour",
            "target_groups.pg.health.interval",
            "auth[0].client_auth",
            "idle_client_timeout",
            "idle_client_park_after",
        ]
    );
}

#[test]
fn unknown_keys_are_reported_at_their_path() {
    let text = MINIMAL.replace("    engine:", "    engine_typo: 1\n    engine:");
    let found = one_problem(&text);
    assert!(
        found.starts_with(
            "target_groups.pg.engine_typo: unknown key `engine_typo`, expected one of"
        ),
        "{found}"
    );
    let found = one_problem(&format!("{MINIMAL}foo: 1\n"));
    assert!(found.starts_with("foo: unknown key `foo`"), "{found}");
}

#[test]
fn several_problems_inside_one_element_are_all_reported() {
    let text = MINIMAL.replace(
        "    target_group: pg\n",
        "    target_group: pg\n    role: writer\n    extra: 1\n    allowed_cidrs: [nope, 10.0.0.0/8, 300.0.0.0/8]\n",
    );
    // Within one element the order is that of the keys' names, not of the document.
    assert_eq!(
        paths(&text),
        [
            "endpoints[0].allowed_cidrs[0]",
            "endpoints[0].allowed_cidrs[2]",
            "endpoints[0].extra",
            "endpoints[0].role",
        ]
    );
}

#[test]
fn bad_durations_explain_the_format() {
    let text = MINIMAL.replace(
        "    instances:",
        "    connection_pool: {connection_borrow_timeout: 30}\n    instances:",
    );
    let found = one_problem(&text);
    assert!(
        found.starts_with("target_groups.pg.connection_pool.connection_borrow_timeout: "),
        "{found}"
    );
    assert!(
        found.contains("expected a duration like 100ms, 30s, 30m, 2h"),
        "{found}"
    );
}

#[test]
fn pool_limits_are_mutually_exclusive_and_bounded() {
    let pool = "    connection_pool: {max_connections: 10, max_connections_percent: 50}\n";
    let found = one_problem(&MINIMAL.replace("    instances:", &format!("{pool}    instances:")));
    assert_eq!(
        found,
        "target_groups.pg.connection_pool: max_connections and max_connections_percent are mutually exclusive; set one"
    );
    let pool =
        "    connection_pool: {max_connections_percent: 0, max_idle_connections_percent: 101}\n";
    assert_eq!(
        paths(&MINIMAL.replace("    instances:", &format!("{pool}    instances:"))),
        [
            "target_groups.pg.connection_pool.max_connections_percent",
            "target_groups.pg.connection_pool.max_idle_connections_percent",
        ]
    );
}

#[test]
fn a_fleet_needs_a_name_and_one_budget() {
    let with = |fleet: &str| {
        MINIMAL.replace(
            "    instances:",
            &format!("    connection_pool: {{fleet: {fleet}}}\n    instances:"),
        )
    };
    assert!(problems(&with("{name: orders-api, max_connections: 60}")).is_empty());
    assert!(problems(&with("{name: orders-api, max_connections_percent: 80}")).is_empty());
    assert_eq!(
        one_problem(&with("{name: orders-api}")),
        "target_groups.pg.connection_pool.fleet: needs a budget: max_connections or max_connections_percent"
    );
    assert_eq!(
        paths(&with("{name: ' ', max_connections: 1}")),
        [
            "target_groups.pg.connection_pool.fleet.name",
            "target_groups.pg.connection_pool.fleet.max_connections",
        ]
    );
    assert_eq!(
        paths(&with("{name: a, max_connections_percent: 101}")),
        ["target_groups.pg.connection_pool.fleet.max_connections_percent"]
    );
    assert!(
        one_problem(&with(
            "{name: a, max_connections: 9, max_connections_percent: 9}"
        ))
        .contains("mutually exclusive")
    );
}

#[test]
fn duplicate_listen_addresses_and_names_are_reported() {
    let second = "  - name: writer\n    listen: 127.0.0.1:6432\n    target_group: nope\n    role: read_only\n";
    let text = MINIMAL.replace("target_groups:", &format!("{second}target_groups:"));
    let found = problems(&text);
    assert_eq!(
        found,
        [
            "endpoints[1].name: duplicate endpoint name `writer` (also endpoints[0])",
            "endpoints[1].listen: listen address 127.0.0.1:6432 is already used by endpoints[0]",
            "endpoints[1].target_group: unknown target group `nope` (defined: pg)",
        ]
    );
}

#[test]
fn unsupported_features_and_bad_references_are_reported() {
    let text = MINIMAL
        .replace(
            "    target_group: pg\n",
            "    target_group: pg\n    require_tls: true\n",
        )
        .replace("engine: postgres", "engine: mysql\n    monitor_user: ghost")
        .replace(
            "[127.0.0.1:5432]",
            "[127.0.0.1:5432, db:0, \"::1:5432\", \"[::1]:5432\"]",
        )
        + "  - username: app\n    client_password_auth_type: mysql_native_password\n    secret: aws-secretsmanager:db\n";
    assert_eq!(
        problems(&text),
        [
            "endpoints[0].require_tls: needs a `tls` section with the certificate to present",
            "target_groups.pg.instances[1]: invalid instance `db:0`: the port must be a number in 1-65535",
            "target_groups.pg.instances[2]: invalid instance `::1:5432`: write IPv6 addresses as [addr]:port",
            "target_groups.pg.monitor_user: monitor_user `ghost` is not the username of any auth entry",
            "auth[1].username: duplicate username `app` (also auth[0])",
        ]
    );
}

#[test]
fn token_logins_need_their_sections() {
    let text = MINIMAL.to_owned()
        + "  - username: lambda\n    client_auth: iam\n    secret: file:secrets.yaml#app\n\
           \x20 - username: pod\n    client_auth: jwt\n    secret: file:secrets.yaml#app\n";
    assert_eq!(
        problems(&text),
        [
            "auth[1].client_auth: client_auth iam needs an `iam` section",
            "auth[2].client_auth: client_auth jwt needs a `jwt` section",
        ]
    );
    // The JWKS file is the preflight's to read: a missing one is no config problem.
    let with_jwt = text + "jwt: { jwks_file: missing.json, issuer: i, audience: a }\n";
    assert_eq!(
        problems(&with_jwt),
        ["auth[1].client_auth: client_auth iam needs an `iam` section"]
    );
}

#[test]
fn missing_sections_and_fields() {
    assert_eq!(
        problems("endpoints: []\n"),
        [
            "endpoints: at least one endpoint is required",
            "target_groups: at least one target group is required",
            "auth: at least one auth entry is required",
        ]
    );
    let found = one_problem(&MINIMAL.replace("    listen: 127.0.0.1:6432\n", ""));
    assert_eq!(found, "endpoints[0]: missing key `listen`");
    let found = one_problem(&format!("{MINIMAL}admin: {{listen: localhost:80}}\n"));
    assert!(
        found.starts_with("admin.listen: invalid address `localhost:80`"),
        "{found}"
    );
    assert_eq!(
        problems("# nothing\n"),
        ["(root): the configuration is empty"]
    );
    assert_eq!(
        problems("[1]\n"),
        ["(root): expected a mapping with endpoints, target_groups and auth"]
    );
}

#[test]
fn yaml_errors_carry_line_and_column_and_budgets_hold() {
    let found = one_problem("endpoints: [\n");
    assert!(found.starts_with("(root): invalid YAML: "), "{found}");
    assert!(found.contains("line 1"), "{found}");
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
    {
        bomb.push_str(&format!("{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
    }
    let found = one_problem(&bomb);
    assert!(found.starts_with("(root): invalid YAML: "), "{found}");
}

#[test]
fn display_prints_one_problem_per_line() {
    let errors = ConfigErrors(vec![
        Problem {
            path: "(root)".into(),
            message: "a".into(),
        },
        Problem {
            path: "endpoints[1].role".into(),
            message: "b".into(),
        },
    ]);
    assert_eq!(errors.to_string(), "(root): a\nendpoints[1].role: b");
    let path = format_path(&[
        Seg::key("target_groups"),
        Seg::key("my.group"),
        Seg::Index(2),
    ]);
    assert_eq!(path, "target_groups.\"my.group\"[2]");
}

#[test]
fn worker_threads_default_to_half_the_cpus_and_zero_is_refused() {
    let dir = secrets_dir();
    let config = parse(MINIMAL, dir.path()).unwrap();
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(config.worker_threads(), (cpus / 2).max(1));
    let two = parse(&format!("{MINIMAL}worker_threads: 2\n"), dir.path()).unwrap();
    assert_eq!(two.worker_threads(), 2);
    assert_eq!(
        one_problem(&format!("{MINIMAL}worker_threads: 0\n")),
        "worker_threads: must be at least 1"
    );
}

#[test]
fn secrets_manager_and_server_iam() {
    let text = MINIMAL.replace(
        "instances: [127.0.0.1:5432]\n",
        "instances: [127.0.0.1:5432]\n    server_iam: { region: eu-west-1 }\n",
    ) + "  - username: lambda\n    secret: aws-secretsmanager:arn:aws:secretsmanager:eu-west-1:1:secret:db\n\
           secrets_manager: { region: eu-west-1, endpoint_url: \"http://127.0.0.1:4566\", refresh_interval: 0s }\n";
    assert_eq!(
        problems(&text),
        [
            "target_groups.pg.server_iam: IAM tokens are sent in clear text: set server_tls.mode to require, verify-ca or verify-full",
            "secrets_manager.refresh_interval: must be greater than 0",
        ]
    );
    let fixed = text
        .replace("refresh_interval: 0s", "refresh_interval: 1m")
        .replace(
            "server_iam: { region: eu-west-1 }",
            "server_iam: { region: eu-west-1 }\n    server_tls: { mode: require }",
        );
    assert_eq!(problems(&fixed), Vec::<String>::new());
}

#[test]
fn role_and_engine_names_are_the_words_the_config_uses() {
    let word = |v: serde_json::Value| v.as_str().unwrap().to_owned();
    for role in [Role::ReadWrite, Role::ReadOnly, Role::ReadWriteSplit] {
        assert_eq!(role.name(), word(serde_json::to_value(role).unwrap()));
    }
    for engine in [Engine::Postgres, Engine::Mysql] {
        assert_eq!(engine.name(), word(serde_json::to_value(engine).unwrap()));
    }
}

#[test]
fn tcp_user_timeout_is_off_or_between_a_second_and_an_hour() {
    let with = |v: &str| {
        MINIMAL.replace(
            "instances: [127.0.0.1:5432]\n",
            &format!(
                "instances: [127.0.0.1:5432]\n    connection_pool: {{ tcp_user_timeout: {v} }}\n"
            ),
        )
    };
    for ok in ["0s", "1s", "30s", "1h"] {
        assert_eq!(problems(&with(ok)), Vec::<String>::new(), "{ok}");
    }
    for bad in ["500ms", "2h"] {
        assert_eq!(
            one_problem(&with(bad)),
            "target_groups.pg.connection_pool.tcp_user_timeout: must be 0s (the kernel's) or between 1s and 1h",
            "{bad}"
        );
    }
}

#[test]
fn unix_socket_instances_need_an_absolute_path_and_no_tls() {
    let ok = MINIMAL.replace(
        "[127.0.0.1:5432]",
        "[\"unix:/var/run/postgresql/.s.PGSQL.5432\", 127.0.0.1:5433]",
    );
    assert_eq!(problems(&ok), Vec::<String>::new());
    let text = MINIMAL
        .replace(
            "[127.0.0.1:5432]",
            "[\"unix:/var/run/postgresql/.s.PGSQL.5432\", \"unix:relative.sock\"]",
        )
        .replace(
            "    engine: postgres\n",
            "    engine: postgres\n    server_tls: {mode: require}\n",
        );
    assert_eq!(
        problems(&text),
        [
            "target_groups.pg.server_tls: a unix: instance has no TLS: set server_tls.mode to disable or prefer",
            "target_groups.pg.instances[1]: invalid instance `unix:relative.sock`: a Unix-domain socket is `unix:` and the socket file's absolute path, e.g. unix:/var/run/postgresql/.s.PGSQL.5432",
        ]
    );
}
