//! `posta plugin check`: what a component is, which contract version it
//! targets, what it imports and which capabilities it would need — or why
//! the host would refuse it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use super::capability::linker;
use super::pool::World;
use super::runtime::engine;
use super::worlds::{Personalizer, Transport};

/// The contract versions this host serves.
pub const SUPPORTED: &[&str] = &["0.1.0"];
const PACKAGE: &str = "posta:plugin";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub kind: &'static str,
    pub version: String,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    pub capabilities: Vec<String>,
}

/// What a component costs the host: read by `posta plugin check`, paid at
/// load (compiling, unless the compile cache has it) and per instance (a
/// pool keeps instances for reuse; a burst beyond them pays it per call).
#[derive(Debug, Clone, PartialEq)]
pub struct Cost {
    pub bytes: u64,
    pub compile: Duration,
    pub instantiate: Duration,
    /// Linear memory of a new instance, before its first call.
    pub memory: u64,
}

impl std::fmt::Display for Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "size: {:.1} MiB", self.bytes as f64 / f64::from(1 << 20))?;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        writeln!(
            f,
            "compile: {:.0} ms (once per start without a warm compile cache)",
            ms(self.compile)
        )?;
        writeln!(f, "instantiate: {:.2} ms (per pooled instance)", ms(self.instantiate))?;
        writeln!(
            f,
            "memory: {:.1} MiB per instance before its first call",
            self.memory as f64 / f64::from(1 << 20)
        )
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "kind: {}", self.kind)?;
        writeln!(f, "contract: {PACKAGE}@{}", self.version)?;
        writeln!(f, "exports: {}", self.exports.join(", "))?;
        writeln!(f, "imports:")?;
        for i in &self.imports {
            writeln!(f, "  {i}")?;
        }
        writeln!(f, "capabilities it may need:")?;
        if self.capabilities.is_empty() {
            writeln!(f, "  none")?;
        }
        for c in &self.capabilities {
            writeln!(f, "  {c}")?;
        }
        Ok(())
    }
}

/// Refuses contract versions this host does not serve, naming those it does.
pub fn supported(version: &str) -> Result<(), String> {
    if SUPPORTED.contains(&version) {
        return Ok(());
    }
    Err(format!(
        "targets {PACKAGE}@{version}; this host supports {}",
        SUPPORTED
            .iter()
            .map(|v| format!("{PACKAGE}@{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// The contract version named by an import like `posta:plugin/host@0.1.0`.
fn contract_version(name: &str) -> Option<&str> {
    name.strip_prefix(PACKAGE)?
        .strip_prefix('/')?
        .split_once('@')
        .map(|(_, v)| v)
}

/// Capabilities implied by WASI imports. Every Rust component imports the
/// filesystem and CLI interfaces through std, so only sockets and HTTP say
/// something definite.
fn capabilities(imports: &[String], sends_http: bool) -> Vec<String> {
    let mut caps = Vec::new();
    if imports.iter().any(|i| i.starts_with("wasi:sockets/tcp")) {
        caps.push("network: outbound TCP, granted per host:port by capabilities.connect".into());
    }
    if imports.iter().any(|i| i.starts_with("wasi:tls/")) {
        caps.push("tls: client TLS by the host over granted sockets (system roots + tls.extra_ca_file)".into());
    }
    if imports.iter().any(|i| i.starts_with("wasi:sockets/ip-name-lookup")) {
        caps.push("network: DNS lookups (not granted by this host; configure addresses)".into());
    }
    // Tools that bind a whole world (ComponentizeJS) import both.
    let http: Vec<&str> = [
        (sends_http, "the host's http-send"),
        (imports.iter().any(|i| i.starts_with("wasi:http/")), "wasi:http"),
    ]
    .into_iter()
    .filter_map(|(used, way)| used.then_some(way))
    .collect();
    if !http.is_empty() {
        caps.push(format!(
            "http: outbound requests ({}), granted per origin by capabilities.http",
            http.join(", ")
        ));
    }
    if imports.iter().any(|i| i.starts_with("wasi:filesystem/preopens")) {
        caps.push("filesystem: only directories listed in capabilities.dirs (none by default)".into());
    }
    caps
}

/// A compile error in one line: the parser's first line says what is
/// wrong, the rest dumps bytes.
pub fn component_error(e: &wasmtime::Error) -> String {
    let text = format!("{e:#}");
    format!(
        "not a valid component: {}",
        text.lines()
            .next()
            .unwrap_or_default()
            .trim_end_matches(" - expected=[")
    )
}

/// What the component at `path` is and what it costs; an error says why
/// the host would refuse it.
pub async fn check(path: &Path) -> Result<(Report, Cost), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // Uncached: a check is about this file, once, and times its compile.
    let engine = engine(None).map_err(|e| format!("{e:#}"))?;
    let started = Instant::now();
    let component = Component::new(&engine, &bytes).map_err(|e| component_error(&e))?;
    let compile = started.elapsed();
    let linker = linker(&engine).map_err(|e| format!("{e:#}"))?;
    let report = inspect(&engine, &linker, &component)?;
    let (instantiate, memory) = if report.kind == Personalizer::KIND {
        instantiate::<Personalizer>(&engine, &linker, &component).await?
    } else {
        instantiate::<Transport>(&engine, &linker, &component).await?
    };
    let cost = Cost {
        bytes: bytes.len() as u64,
        compile,
        instantiate,
        memory: memory as u64,
    };
    Ok((report, cost))
}

/// How long one instance of `component` takes to create, with the default
/// limits and no grants (the second of two: the first also pays for
/// one-time work in the engine), and the linear memory it starts with.
async fn instantiate<W: World>(
    engine: &wasmtime::Engine,
    linker: &wasmtime::component::Linker<super::runtime::HostState>,
    component: &Component,
) -> Result<(Duration, usize), String> {
    let pre = W::pre(linker, component).map_err(|e| format!("{e:#}"))?;
    let tls = super::capability::tls::client_config(None)?;
    let meta = super::runtime::PluginMeta::new(
        "check".into(),
        Default::default(),
        crate::config::Limits::default(),
        super::grants::Grants::default(),
        tls,
        1,
    );
    let pool = super::pool::Pool::<W>::new(engine, pre, Arc::new(meta), 0);
    pool.instantiate().await.map_err(|e| e.to_string())?;
    let started = Instant::now();
    let memory = pool.instantiate().await.map_err(|e| e.to_string())?;
    Ok((started.elapsed(), memory))
}

/// Kind, contract version and needs of a compiled component, and whether
/// this host can link it.
pub fn inspect(
    engine: &wasmtime::Engine,
    linker: &wasmtime::component::Linker<super::runtime::HostState>,
    component: &Component,
) -> Result<Report, String> {
    let engine = engine.clone();
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(&engine).map(|(n, _)| n.to_string()).collect();
    // A component imports only the host functions its code calls.
    let sends_http = ty.imports(&engine).any(|(name, item)| {
        name.starts_with("posta:plugin/host@")
            && matches!(&item.ty, ComponentItem::ComponentInstance(i) if i.exports(&engine).any(|(f, _)| f == "http-send"))
    });
    let exports: Vec<String> = ty.exports(&engine).map(|(n, _)| n.to_string()).collect();

    let versions: Vec<&str> = imports.iter().filter_map(|i| contract_version(i)).collect();
    let version = match versions.first() {
        Some(v) if versions.iter().all(|w| w == v) => v.to_string(),
        Some(_) => return Err(format!("imports several versions of {PACKAGE}: {versions:?}")),
        None => return Err(format!("imports no {PACKAGE} interface: not a Posta plugin")),
    };
    supported(&version)?;
    let has = |name: &str| exports.iter().any(|e| e == name);
    let kind = if has("deliver") {
        Transport::KIND
    } else if has("personalize") {
        Personalizer::KIND
    } else {
        return Err(format!(
            "exports neither `deliver` (transport) nor `personalize` (personalizer): {exports:?}"
        ));
    };
    // The real test: can this host link and pre-instantiate it?
    let linked = if kind == Transport::KIND {
        Transport::pre(linker, component).map(|_| ())
    } else {
        Personalizer::pre(linker, component).map(|_| ())
    };
    linked.map_err(|e| format!("does not satisfy the {PACKAGE}@{version} {kind} contract: {e:#}"))?;
    Ok(Report {
        kind,
        version,
        capabilities: capabilities(&imports, sends_http),
        imports,
        exports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_posta_imports() {
        assert_eq!(contract_version("posta:plugin/host@0.1.0"), Some("0.1.0"));
        assert_eq!(contract_version("posta:plugin/types@0.2.0"), Some("0.2.0"));
        assert_eq!(contract_version("wasi:cli/stdout@0.2.0"), None);
        assert_eq!(contract_version("posta:plugins/host@0.1.0"), None);
    }

    #[test]
    fn unsupported_versions_name_the_supported_ones() {
        assert!(supported("0.1.0").is_ok());
        let err = supported("0.2.0").unwrap_err();
        assert_eq!(err, "targets posta:plugin@0.2.0; this host supports posta:plugin@0.1.0");
    }

    #[tokio::test]
    async fn bundled_components_pass_and_say_what_they_cost() {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in crate::plugins::bundled::BUNDLED {
            let path = dir.path().join(format!("{name}.wasm"));
            std::fs::write(&path, bytes).unwrap();
            let (report, cost) = check(&path).await.unwrap();
            assert_eq!(cost.bytes, bytes.len() as u64, "{name}");
            let expected = if *name == "personalize" {
                "personalizer"
            } else {
                "transport"
            };
            assert_eq!(report.kind, expected, "{name}");
            assert_eq!(report.version, "0.1.0");
            let batches = report.exports.iter().any(|e| e == "deliver-batch");
            assert_eq!(batches, matches!(*name, "smtp" | "log"), "{name}: {:?}", report.exports);
            assert!(
                report.imports.iter().any(|i| i.starts_with("posta:plugin/")),
                "{report}"
            );
        }
    }

    #[tokio::test]
    async fn garbage_is_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.wasm");
        std::fs::write(&path, b"not wasm").unwrap();
        assert!(check(&path).await.unwrap_err().contains("not a valid component"));
        assert!(
            check(&dir.path().join("missing.wasm"))
                .await
                .unwrap_err()
                .contains("cannot read")
        );
    }
}
