//! The trust roots verification would use offline (`trust root (…)` checks).

use super::report::{Check, Status};

/// One check per Sigstore instance: which trust root verification would use offline (embedded, or refreshed
/// through TUF), and its age; a warning past [`thv_sandbox_provenance::WARN_AGE_DAYS`]. Nothing is fetched.
pub fn trust_root_checks(opts: &thv_sandbox_provenance::tuf::TufOptions) -> Vec<Check> {
    use thv_sandbox_provenance::{tuf, Instance};
    let now = jiff::Timestamp::now();
    [
        (Instance::PublicGood, "trust root (public-good)"),
        (Instance::GitHub, "trust root (GitHub)"),
    ]
    .into_iter()
    .map(|(instance, name)| match tuf::status(instance, opts) {
        Ok(st) => {
            let mut detail = st.trust_root.describe(now);
            if !st.refresh {
                detail.push_str("; refreshing through TUF is off");
            }
            match st.warning {
                Some(_) => Check::new(name, Status::Warn, detail)
                    .with_fix("run online (refreshed when due) or `thv-sandbox trust refresh`"),
                None => Check::new(name, Status::Ok, detail),
            }
        }
        Err(e) => Check::new(name, Status::Warn, e.to_string()),
    })
    .collect()
}
