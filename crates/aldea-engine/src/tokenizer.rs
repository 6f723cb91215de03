//! Whisper's byte-level BPE vocabulary, read from a CTranslate2 model directory (`vocabulary.txt`
//! or `vocabulary.json`), with the special tokens the decoding loop needs.
//!
//! Only id → text is needed at run time: prompts are built from token ids the model produced, and
//! special tokens are looked up by name.

use std::collections::HashMap;
use std::path::Path;

use crate::EngineError;

/// The vocabulary and special token ids of one model.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    tokens: Vec<String>,
    /// Bytes of each token (empty for special tokens).
    bytes: Vec<Vec<u8>>,
    ids: HashMap<String, u32>,
    pub eot: u32,
    pub sot: u32,
    pub sot_prev: u32,
    pub sot_lm: Option<u32>,
    pub no_speech: Option<u32>,
    pub no_timestamps: u32,
    pub timestamp_begin: u32,
    pub transcribe: Option<u32>,
    pub translate: Option<u32>,
}

impl Tokenizer {
    /// Reads `vocabulary.txt` (one token per line) or `vocabulary.json` (an array of tokens).
    pub fn from_model_dir(dir: &Path) -> Result<Tokenizer, EngineError> {
        let txt = dir.join("vocabulary.txt");
        let json = dir.join("vocabulary.json");
        let tokens: Vec<String> = if txt.exists() {
            let text = std::fs::read_to_string(&txt).map_err(|e| EngineError::model(&txt, e))?;
            text.lines().map(str::to_owned).collect()
        } else {
            let text = std::fs::read_to_string(&json).map_err(|e| EngineError::model(&json, e))?;
            serde_json::from_str(&text).map_err(|e| EngineError::model(&json, e))?
        };
        Tokenizer::from_tokens(tokens)
    }

    pub fn from_tokens(tokens: Vec<String>) -> Result<Tokenizer, EngineError> {
        let decoder = byte_decoder();
        let bytes =
            tokens
                .iter()
                .map(|t| {
                    if is_special(t) {
                        Vec::new()
                    } else {
                        t.chars().filter_map(|c| decoder.get(&c).copied()).collect()
                    }
                })
                .collect();
        let ids: HashMap<String, u32> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let get = |name: &str| ids.get(name).copied();
        let need = |name: &str| {
            get(name).ok_or_else(|| EngineError::Model(format!("vocabulary lacks the special token {name}")))
        };
        Ok(Tokenizer {
            eot: need("<|endoftext|>")?,
            sot: need("<|startoftranscript|>")?,
            sot_prev: need("<|startofprev|>")?,
            sot_lm: get("<|startoflm|>"),
            no_speech: get("<|nospeech|>").or_else(|| get("<|nocaptions|>")),
            no_timestamps: need("<|notimestamps|>")?,
            timestamp_begin: need("<|0.00|>")?,
            transcribe: get("<|transcribe|>"),
            translate: get("<|translate|>"),
            tokens,
            bytes,
            ids,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The token's string as the vocabulary spells it (what CTranslate2 prompts take).
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    pub fn id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    /// The raw bytes of a text token (empty for special tokens and unknown ids).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.bytes.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// Decodes text tokens (ids below `eot`), ignoring special tokens.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> =
            ids.iter().filter(|&&id| id < self.eot).flat_map(|&id| self.token_bytes(id).iter().copied()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Splits text tokens into words the way Whisper does for space-delimited languages: tokens are
    /// grouped until they form whole UTF-8 characters, and a new word starts at a leading space, at a
    /// punctuation-only piece, or at a special token. Returns `(word, token ids)` pairs.
    pub fn split_to_words(&self, ids: &[u32]) -> Vec<(String, Vec<u32>)> {
        let mut words: Vec<(String, Vec<u32>)> = Vec::new();
        let mut pending_bytes = Vec::new();
        let mut pending_ids = Vec::new();
        for &id in ids {
            pending_ids.push(id);
            if id >= self.eot {
                pending_bytes.extend_from_slice(self.token(id).unwrap_or_default().as_bytes());
            } else {
                pending_bytes.extend_from_slice(self.token_bytes(id));
            }
            let Ok(piece) = std::str::from_utf8(&pending_bytes) else {
                continue;
            };
            let piece = piece.to_owned();
            let special = pending_ids[0] >= self.eot;
            let with_space = piece.starts_with(' ');
            let punctuation = is_ascii_punctuation(piece.trim());
            match words.last_mut() {
                Some(last) if !(special || with_space || punctuation) => {
                    last.0.push_str(&piece);
                    last.1.append(&mut pending_ids);
                }
                _ => words.push((piece, std::mem::take(&mut pending_ids))),
            }
            pending_ids.clear();
            pending_bytes.clear();
        }
        if !pending_ids.is_empty() {
            words.push((String::from_utf8_lossy(&pending_bytes).into_owned(), pending_ids));
        }
        words
    }
}

fn is_special(token: &str) -> bool {
    token.starts_with("<|") && token.ends_with("|>")
}

/// Python's `s in string.punctuation`: the empty string and any contiguous run of the ASCII
/// punctuation characters in their listed order match; we accept a single character or empty.
fn is_ascii_punctuation(s: &str) -> bool {
    const PUNCT: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
    s.is_empty() || PUNCT.contains(s)
}

/// GPT-2's reversible byte ↔ printable-character map, inverted.
fn byte_decoder() -> HashMap<char, u8> {
    let mut printable: Vec<u32> = Vec::new();
    printable.extend(u32::from(b'!')..=u32::from(b'~'));
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut map = HashMap::new();
    let mut extra = 0u32;
    for b in 0u32..256 {
        let c = if printable.contains(&b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        if let Some(ch) = char::from_u32(c) {
            map.insert(ch, b as u8);
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Tokenizer {
        let mut tokens: Vec<String> =
            ["Ġhello", "Ġworld", ",", "Ġdon", "'t", "<|endoftext|>", "<|startoftranscript|>", "<|startofprev|>"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
        tokens.extend(["<|notimestamps|>", "<|0.00|>", "<|0.02|>"].iter().map(|s| (*s).to_owned()));
        Tokenizer::from_tokens(tokens).unwrap()
    }

    #[test]
    fn decodes_byte_level_tokens() {
        let tok = toy();
        assert_eq!(tok.decode(&[0, 1, 2, 3, 4, 9]), " hello world, don't");
        assert_eq!(tok.timestamp_begin, 9);
        assert_eq!(tok.eot, 5);
    }

    #[test]
    fn splits_words_like_whisper() {
        let tok = toy();
        let words: Vec<String> = tok.split_to_words(&[0, 2, 3, 4, 5]).into_iter().map(|w| w.0).collect();
        assert_eq!(words, vec![" hello", ",", " don't", "<|endoftext|>"]);
    }
}
