//! The engine crate stays free of the service's outer layers: no HTTP server,
//! no CLI parser, no configuration loader among its dependencies (issue 12:
//! "no actix/clap/figment"), so it can be built, mocked and run on its own.

const FORBIDDEN: [&str; 6] = [
    "actix-web",
    "actix",
    "clap",
    "figment",
    "utoipa",
    "modelgen-api",
];

#[test]
fn the_engine_depends_on_no_http_server_cli_or_config_loader() {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .expect("the engine's Cargo.toml is readable");
    let mut in_deps = false;
    let mut found = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if !in_deps || line.starts_with('#') || line.is_empty() {
            continue;
        }
        let name = line.split(['=', '.', ' ']).next().unwrap_or("").trim();
        if FORBIDDEN.contains(&name) {
            found.push(name.to_owned());
        }
    }
    assert!(
        found.is_empty(),
        "modelgen-engine must not depend on {found:?}"
    );
}
