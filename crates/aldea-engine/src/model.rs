//! The parts of a CTranslate2 Whisper model directory the loop needs besides the weights.

use std::path::Path;

use serde::Deserialize;

use crate::EngineError;

/// `config.json` of a CTranslate2 Whisper model.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ModelConfig {
    #[serde(default)]
    pub alignment_heads: Vec<(usize, usize)>,
    #[serde(default)]
    pub lang_ids: Vec<u32>,
    #[serde(default)]
    pub suppress_ids: Vec<i32>,
    #[serde(default)]
    pub suppress_ids_begin: Vec<i32>,
    /// Filled from the model, not the file.
    #[serde(skip)]
    pub n_mels: usize,
    #[serde(skip)]
    pub multilingual: bool,
}

impl ModelConfig {
    pub fn from_model_dir(dir: &Path) -> Result<ModelConfig, EngineError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| EngineError::model(&path, e))?;
        serde_json::from_str(&text).map_err(|e| EngineError::model(&path, e))
    }
}
