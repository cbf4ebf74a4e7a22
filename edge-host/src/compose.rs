//! Component dependencies, as Spin 3+ declares them: an import of a WIT
//! interface satisfied by another component's export. The importing
//! component and its dependencies are composed into one component with
//! wac-graph before compilation; whatever the dependencies import in turn
//! (WASI, Spin interfaces) stays an import of the composition and is served
//! by the host with the importing component's grants.

use crate::manifest::{App, ComponentDecl, Dependency};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::PathBuf;
use wac_graph::types::Package;
use wac_graph::{CompositionGraph, EncodeOptions, NodeId};

pub fn compose(app: &App, decl: &ComponentDecl, socket_bytes: Vec<u8>) -> Result<Vec<u8>> {
    let mut graph = CompositionGraph::new();
    let socket = Package::from_bytes("edge-host:socket", None, socket_bytes, graph.types_mut())
        .context("cannot read the component's type")?;
    let socket = graph.register_package(socket)?;
    let socket_imports: Vec<String> =
        graph.types()[graph[socket].ty()].imports.keys().cloned().collect();
    let socket_instance = graph.instantiate(socket);

    // One instance per dependency file, however many interfaces it provides.
    let mut instances: BTreeMap<PathBuf, NodeId> = BTreeMap::new();
    for (index, (interface, dep)) in decl.dependencies.iter().enumerate() {
        let (path, export) = match dep {
            Dependency::Path(p) => (p.clone(), None),
            Dependency::Component { id, export } => (app.components[id].source.clone(), export.clone()),
        };
        let import = matching_import(&socket_imports, interface).with_context(|| {
            format!("dependency `{interface}`: the component imports no such interface")
        })?;
        let instance = match instances.get(&path) {
            Some(i) => *i,
            None => {
                let bytes = crate::runtime::read_component(&format!("dependency `{interface}`"), &path)?;
                let pkg = Package::from_bytes(&format!("edge-host:dep{index}"), None, bytes, graph.types_mut())
                    .with_context(|| format!("cannot read dependency {}", path.display()))?;
                let pkg = graph.register_package(pkg)?;
                let i = graph.instantiate(pkg);
                instances.insert(path.clone(), i);
                i
            }
        };
        let export_name = export.unwrap_or_else(|| import.clone());
        let provided = graph.alias_instance_export(instance, &export_name).with_context(|| {
            format!("dependency `{interface}`: {} does not export `{export_name}`", path.display())
        })?;
        graph
            .set_instantiation_argument(socket_instance, &import, provided)
            .with_context(|| format!("dependency `{interface}`: the export does not match the import's type"))?;
    }

    let exports: Vec<String> = graph.types()[graph[socket].ty()].exports.keys().cloned().collect();
    for name in exports {
        let export = graph.alias_instance_export(socket_instance, &name)?;
        graph.export(export, &name)?;
    }
    Ok(graph.encode(EncodeOptions::default())?)
}

/// The import a manifest dependency key names: the exact interface
/// (`ns:pkg/iface@1.0.0`) or the same interface without its version.
fn matching_import(imports: &[String], key: &str) -> Result<String> {
    if let Some(exact) = imports.iter().find(|i| *i == key) {
        return Ok(exact.clone());
    }
    let candidates: Vec<&String> = imports
        .iter()
        .filter(|i| i.split_once('@').is_some_and(|(name, _)| name == key))
        .collect();
    match candidates.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!("no import named `{key}`"),
        _ => bail!("`{key}` matches several imported versions; name one with its @version"),
    }
}
