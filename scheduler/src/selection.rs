//! Which features a request names: a feature service, or a list of `table` and
//! `table.feature` references; resolved against a workspace's definitions into tables and
//! their features, in the order first named. Training sets need the tables offline, the
//! feature server online.

use ftab_model::definitions::{FeatureRef, FeatureTable};

use crate::catalog::WorkspaceState;
use crate::error::{Error, Result};
use crate::workspaces::find_table;

/// Which store the selected tables must be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Training sets read the offline history.
    Offline,
    /// The feature server reads the online store.
    Online,
}

/// The tables of `service` or `features` (exactly one given) with their selected
/// features, in the order first named.
pub fn select_features<'a>(
    state: &'a WorkspaceState,
    service: Option<&str>,
    features: Option<&[FeatureRef]>,
    need: Need,
) -> Result<Vec<(&'a FeatureTable, Vec<String>)>> {
    let invalid = |m: &str| Error::InvalidArgument(m.to_string());
    let refs: Vec<FeatureRef> = match (service, features) {
        (Some(service), None) => state
            .definitions
            .feature_service(service)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "feature service `{}` does not exist in workspace `{}`",
                    ftab_model::names::echoed(service),
                    state.name
                ))
            })?
            .features
            .clone(),
        (None, Some(features)) if !features.is_empty() => features.to_vec(),
        (None, Some(_)) => return Err(invalid("features is empty; name at least one")),
        (Some(_), Some(_)) => {
            return Err(invalid("give either feature_service or features, not both"));
        }
        (None, None) => {
            return Err(invalid(
                "the request names no features; give feature_service or features",
            ));
        }
    };
    let mut selection: Vec<(&FeatureTable, Vec<String>)> = Vec::new();
    for r in refs {
        let table = find_table(state, &r.table)?;
        match need {
            Need::Offline if !table.offline => {
                return Err(Error::FailedPrecondition(format!(
                    "feature table `{}` is not offline (offline = false), so it has no history to build training sets from",
                    table.name
                )));
            }
            Need::Online if !table.online => {
                return Err(Error::FailedPrecondition(format!(
                    "feature table `{}` is not online (online = false), so its features cannot be served",
                    table.name
                )));
            }
            _ => {}
        }
        let features = table.features(&state.definitions);
        let chosen: Vec<String> = match &r.feature {
            None => features.iter().map(|c| c.name.to_string()).collect(),
            Some(feature) => {
                if !features.iter().any(|c| &c.name == feature) {
                    return Err(Error::NotFound(format!(
                        "feature table `{}` has no feature `{feature}`; its features are: {}",
                        table.name,
                        features
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                vec![feature.to_string()]
            }
        };
        match selection.iter_mut().find(|(t, _)| t.name == table.name) {
            Some((_, existing)) => {
                for f in chosen {
                    if !existing.contains(&f) {
                        existing.push(f);
                    }
                }
            }
            None => selection.push((table, chosen)),
        }
    }
    Ok(selection)
}
