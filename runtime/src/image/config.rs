//! The image's runtime configuration: the parts of its OCI config that decide how the server runs.

/// The parts of the image configuration that decide how the server runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageRuntimeConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env` as `NAME=VALUE`.
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `Volumes` (container paths).
    pub volumes: Vec<String>,
    /// `User`.
    pub user: String,
}

impl ImageRuntimeConfig {
    /// The parts of the image config the spec uses.
    pub fn from_image(config: &oci_spec::image::ImageConfiguration) -> ImageRuntimeConfig {
        let c = config.config().clone().unwrap_or_default();
        ImageRuntimeConfig {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone(),
            volumes: c
                .volumes()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            user: c.user().clone().unwrap_or_default(),
        }
    }
}
