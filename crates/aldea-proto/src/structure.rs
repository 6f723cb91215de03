//! A transcript's structure as Deepgram returns it: `utterances` (the words split where a pause of
//! `utt_split` seconds or more falls between two of them) and `paragraphs` (sentences, ended by
//! their punctuation, grouped where the speaker pauses). Pure functions over timed words: the words
//! themselves are never changed, only grouped, so every time in the structure is a word's own.

use serde::{Deserialize, Serialize};

use crate::Word;

/// `utt_split`'s default: seconds of silence between words that end an utterance.
pub const DEFAULT_UTT_SPLIT_S: f64 = 0.8;
/// A pause this long before a sentence starts a paragraph (the pause that ends an utterance).
pub const PARAGRAPH_PAUSE_S: f64 = 0.8;
/// A paragraph of this many sentences ends at the next pause of [`SHORT_PAUSE_S`] or more...
pub const PARAGRAPH_SENTENCES: usize = 4;
pub const SHORT_PAUSE_S: f64 = 0.5;
/// ...and at this many sentences whatever the pause.
pub const MAX_PARAGRAPH_SENTENCES: usize = 8;

/// Pauses are compared with this slack: a word ending at 0.9 and the next starting at 1.7 are 0.8 s
/// apart, not 0.7999999999999998.
const SLACK_S: f64 = 1e-6;

/// One utterance of `results.utterances[]`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Utterance {
    pub start: f64,
    pub end: f64,
    /// The mean of its words' confidences.
    pub confidence: f64,
    pub channel: u32,
    /// Its words' punctuated forms, joined by spaces.
    pub transcript: String,
    pub words: Vec<Word>,
    /// A UUID.
    pub id: String,
}

/// `alternatives[].paragraphs`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Paragraphs {
    /// The paragraphs as text: each after a blank line (the first after a line break), as
    /// Deepgram writes it.
    pub transcript: String,
    pub paragraphs: Vec<Paragraph>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Paragraph {
    pub sentences: Vec<ParagraphSentence>,
    pub num_words: u32,
    pub start: f64,
    pub end: f64,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParagraphSentence {
    pub text: String,
    pub start: f64,
    pub end: f64,
}

/// The words split into utterances at every pause of `split_s` seconds or more; `id` names the
/// `n`-th (a UUID the caller makes).
pub fn utterances(words: &[Word], channel: u32, split_s: f64, mut id: impl FnMut(usize) -> String) -> Vec<Utterance> {
    let mut groups: Vec<&[Word]> = Vec::new();
    let mut first = 0;
    for i in 1..words.len() {
        if words[i].start - words[i - 1].end >= split_s - SLACK_S {
            groups.push(&words[first..i]);
            first = i;
        }
    }
    if first < words.len() {
        groups.push(&words[first..]);
    }
    groups
        .into_iter()
        .enumerate()
        .map(|(n, group)| Utterance {
            start: group[0].start,
            end: group[group.len() - 1].end,
            confidence: group.iter().map(|w| w.confidence).sum::<f64>() / group.len() as f64,
            channel,
            transcript: joined(group),
            words: group.to_vec(),
            id: id(n),
        })
        .collect()
}

/// Punctuated words joined by spaces, as the transcript reads: a word that begins with a hyphen
/// continues the one before (Whisper's words split "ill-disposed" as "ill" and "-disposed").
fn joined(words: &[Word]) -> String {
    let mut text = String::new();
    for word in words {
        if !text.is_empty() && !word.punctuated_word.starts_with('-') {
            text.push(' ');
        }
        text.push_str(&word.punctuated_word);
    }
    text
}

/// The words as sentences (each ends at a word that ends a sentence, or with the words), grouped
/// into paragraphs: a new one starts after a pause of [`PARAGRAPH_PAUSE_S`], after one of
/// [`SHORT_PAUSE_S`] once a paragraph has [`PARAGRAPH_SENTENCES`] sentences, and after
/// [`MAX_PARAGRAPH_SENTENCES`] sentences whatever the pause.
pub fn paragraphs(words: &[Word]) -> Paragraphs {
    let mut sentences: Vec<&[Word]> = Vec::new();
    let mut first = 0;
    for (i, word) in words.iter().enumerate() {
        if crate::subtitles::ends_sentence(&word.punctuated_word) {
            sentences.push(&words[first..=i]);
            first = i + 1;
        }
    }
    if first < words.len() {
        sentences.push(&words[first..]);
    }
    let mut groups: Vec<Vec<&[Word]>> = Vec::new();
    for sentence in sentences {
        let start_new = match groups.last() {
            None => true,
            Some(group) => {
                let pause = sentence[0].start - group[group.len() - 1].last().map_or(0.0, |w| w.end);
                pause >= PARAGRAPH_PAUSE_S - SLACK_S
                    || (group.len() >= PARAGRAPH_SENTENCES && pause >= SHORT_PAUSE_S - SLACK_S)
                    || group.len() >= MAX_PARAGRAPH_SENTENCES
            }
        };
        if start_new {
            groups.push(vec![sentence]);
        } else if let Some(group) = groups.last_mut() {
            group.push(sentence);
        }
    }
    let paragraphs: Vec<Paragraph> = groups
        .into_iter()
        .map(|group| Paragraph {
            start: group[0][0].start,
            end: group[group.len() - 1].last().map_or(0.0, |w| w.end),
            num_words: group.iter().map(|s| s.len() as u32).sum(),
            sentences: group
                .iter()
                .map(|s| ParagraphSentence { text: joined(s), start: s[0].start, end: s[s.len() - 1].end })
                .collect(),
        })
        .collect();
    let transcript = paragraphs
        .iter()
        .map(|p| {
            let text: Vec<&str> = p.sentences.iter().map(|s| s.text.as_str()).collect();
            format!("\n{}", text.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n");
    Paragraphs { transcript, paragraphs }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Words at the given (start, end) with the given text.
    fn words(spec: &[(&str, f64, f64)]) -> Vec<Word> {
        spec.iter().map(|(text, start, end)| Word::from_punctuated(text, *start, *end, 0.9)).collect()
    }

    #[test]
    fn utterances_split_at_pauses_of_utt_split_or_more_and_keep_each_word() {
        let spoken = words(&[
            ("Hello", 0.0, 0.4),
            ("there.", 0.5, 0.9),
            // 0.8 s of silence: a new utterance.
            ("How", 1.7, 1.9),
            ("are", 1.95, 2.1),
            // 0.79 s: the same one.
            ("you?", 2.89, 3.2),
        ]);
        let split = utterances(&spoken, 0, DEFAULT_UTT_SPLIT_S, |n| format!("id-{n}"));
        assert_eq!(split.len(), 2);
        assert_eq!(split[0].transcript, "Hello there.");
        assert_eq!((split[0].start, split[0].end), (0.0, 0.9));
        assert_eq!(split[1].transcript, "How are you?");
        assert_eq!((split[1].start, split[1].end), (1.7, 3.2));
        assert_eq!(split[1].id, "id-1");
        assert!((split[0].confidence - 0.9).abs() < 1e-9);
        let all: Vec<Word> = split.iter().flat_map(|u| u.words.clone()).collect();
        assert_eq!(all, spoken, "every word once, unchanged, in order");
        // A shorter split cuts at the 0.79-s pause too; no words, no utterances.
        assert_eq!(utterances(&spoken, 1, 0.5, |n| n.to_string()).len(), 3);
        // A hyphenated word Whisper split in two reads as one.
        let hyphenated = words(&[("an", 0.0, 0.1), ("ill", 0.1, 0.3), ("-disposed", 0.3, 0.6), ("man.", 0.6, 0.9)]);
        assert_eq!(utterances(&hyphenated, 0, 0.8, |n| n.to_string())[0].transcript, "an ill-disposed man.");
        assert_eq!(paragraphs(&hyphenated).paragraphs[0].sentences[0].text, "an ill-disposed man.");
        assert!(utterances(&[], 0, 0.8, |n| n.to_string()).is_empty());
    }

    #[test]
    fn paragraphs_are_sentences_grouped_at_pauses() {
        let spoken = words(&[
            ("Mr.", 0.0, 0.2),
            ("Smith", 0.25, 0.5),
            ("called.", 0.55, 0.9),
            ("He", 1.0, 1.1),
            ("left", 1.15, 1.4),
            ("a", 1.45, 1.5),
            ("message!", 1.55, 2.0),
            // 0.8 s of silence: a new paragraph.
            ("Call", 2.8, 3.0),
            ("him", 3.05, 3.2),
            ("back", 3.25, 3.5),
        ]);
        let structure = paragraphs(&spoken);
        assert_eq!(structure.paragraphs.len(), 2);
        let first = &structure.paragraphs[0];
        let texts: Vec<&str> = first.sentences.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, ["Mr. Smith called.", "He left a message!"], "an abbreviation ends no sentence");
        assert_eq!((first.start, first.end, first.num_words), (0.0, 2.0, 7));
        assert_eq!((first.sentences[1].start, first.sentences[1].end), (1.0, 2.0));
        let second = &structure.paragraphs[1];
        assert_eq!(second.sentences[0].text, "Call him back", "the words after the last sentence end");
        assert_eq!((second.start, second.end, second.num_words), (2.8, 3.5, 3));
        assert_eq!(structure.transcript, "\nMr. Smith called. He left a message!\n\nCall him back");
        assert_eq!(paragraphs(&[]), Paragraphs { transcript: String::new(), paragraphs: Vec::new() });
    }

    #[test]
    fn long_paragraphs_end_at_a_shorter_pause_and_at_most_eight_sentences() {
        // Sentences of one word, 0.3 s apart, with a 0.6-s pause after the fifth.
        let mut spec = Vec::new();
        let mut t = 0.0;
        for i in 0..20 {
            spec.push(("Yes.", t, t + 0.2));
            t += if i == 4 { 0.8 } else { 0.5 };
        }
        let structure = paragraphs(&words(&spec));
        let sizes: Vec<usize> = structure.paragraphs.iter().map(|p| p.sentences.len()).collect();
        assert_eq!(sizes, [5, 8, 7]);
    }
}
