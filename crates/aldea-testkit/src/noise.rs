//! Synthesized audio without speech, 16 kHz mono: what a guard against invented words must leave
//! silent. Deterministic (fixed seeds), so a failure repeats.

use std::f64::consts::PI;

const RATE: usize = 16_000;

/// Silence, white, pink and brown noise (RMS 0.1 of full scale), a 60-Hz hum with its harmonics,
/// and a quiet room tone (pink noise at RMS 0.003 over a faint hum), each `seconds` long.
pub fn non_speech(seconds: usize) -> Vec<(&'static str, Vec<f32>)> {
    let n = RATE * seconds;
    let hum = |scale: f64| -> Vec<f64> {
        (0..n)
            .map(|i| {
                let t = i as f64 / RATE as f64;
                scale
                    * ((2.0 * PI * 60.0 * t).sin()
                        + 0.3 * (2.0 * PI * 120.0 * t).sin()
                        + 0.2 * (2.0 * PI * 180.0 * t).sin())
            })
            .collect()
    };
    let room: Vec<f64> = rms_to(&pink(n, 3), 0.003).iter().zip(hum(0.002)).map(|(a, b)| a + b).collect();
    vec![
        ("silence", vec![0.0; n]),
        ("white noise", to_f32(&rms_to(&white(n, 1), 0.1))),
        ("pink noise", to_f32(&rms_to(&pink(n, 2), 0.1))),
        ("brown noise", to_f32(&rms_to(&brown(n, 4), 0.1))),
        ("60-Hz hum", to_f32(&hum(0.1))),
        ("room tone", to_f32(&room)),
    ]
}

/// Gaussian white noise (xorshift64 and Box–Muller), unit variance.
fn white(n: usize, seed: u64) -> Vec<f64> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u1, u2) = (uniform(), uniform());
            (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
        })
        .collect()
}

/// 1/f noise (Paul Kellett's three-pole filter of white noise).
fn pink(n: usize, seed: u64) -> Vec<f64> {
    let (mut b0, mut b1, mut b2) = (0.0, 0.0, 0.0);
    white(n, seed)
        .into_iter()
        .map(|w| {
            b0 = 0.99765 * b0 + w * 0.099_046;
            b1 = 0.963 * b1 + w * 0.296_516_4;
            b2 = 0.57 * b2 + w * 1.052_691_3;
            b0 + b1 + b2 + w * 0.1848
        })
        .collect()
}

/// 1/f² noise (white noise through a leaky integrator).
fn brown(n: usize, seed: u64) -> Vec<f64> {
    let mut level = 0.0;
    white(n, seed)
        .into_iter()
        .map(|w| {
            level = 0.998 * level + 0.05 * w;
            level
        })
        .collect()
}

fn rms_to(x: &[f64], target: f64) -> Vec<f64> {
    let rms = (x.iter().map(|v| v * v).sum::<f64>() / x.len().max(1) as f64).sqrt();
    let scale = if rms > 0.0 { target / rms } else { 0.0 };
    x.iter().map(|v| v * scale).collect()
}

fn to_f32(x: &[f64]) -> Vec<f32> {
    x.iter().map(|v| v.clamp(-1.0, 1.0) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_signal_has_its_level_and_length() {
        for (name, samples) in non_speech(2) {
            assert_eq!(samples.len(), 32_000, "{name}");
            let rms = (samples.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / samples.len() as f64).sqrt();
            let expected = match name {
                "silence" => 0.0,
                "60-Hz hum" => 0.1 * ((1.0f64 + 0.09 + 0.04) / 2.0).sqrt(),
                "room tone" => 0.0035,
                _ => 0.1,
            };
            assert!((rms - expected).abs() <= 0.1 * expected.max(0.001), "{name}: RMS {rms}, expected {expected}");
        }
    }
}
