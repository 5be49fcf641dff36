//! What a prompt cost, from a price list of well-known models (US dollars
//! per million tokens, as the providers publish them). A model not on the
//! list has no cost rather than a guess; `FLUE_PRICES` adds or overrides
//! models (`model=input/output/cache-read`, separated by commas, e.g.
//! `openai/my-model=0.5/1.5/0.05`).

use std::collections::HashMap;

use super::Usage;

/// Prices in US dollars per million tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Price {
    /// Input tokens not read from the cache.
    pub input: f64,
    /// Output tokens (reasoning included).
    pub output: f64,
    /// Input tokens read from the provider's prompt cache.
    pub cache_read: f64,
}

/// A prompt's cost in US dollars (the WIT `cost`).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Cost {
    /// For input tokens not read from the cache.
    pub input: f64,
    /// For output tokens.
    pub output: f64,
    /// For input tokens read from the cache.
    pub cache_read: f64,
    /// All of it.
    pub total: f64,
}

/// Well-known models by the start of their name at the provider: the
/// longest matching entry wins (`gpt-4.1-mini` before `gpt-4.1`).
const KNOWN: &[(&str, Price)] = &[
    ("anthropic/claude-opus-4-0", Price { input: 15.0, output: 75.0, cache_read: 1.5 }),
    ("anthropic/claude-opus-4-1", Price { input: 15.0, output: 75.0, cache_read: 1.5 }),
    ("anthropic/claude-opus-4-5", Price { input: 5.0, output: 25.0, cache_read: 0.5 }),
    ("anthropic/claude-opus-4-6", Price { input: 5.0, output: 25.0, cache_read: 0.5 }),
    ("anthropic/claude-opus-4-7", Price { input: 5.0, output: 25.0, cache_read: 0.5 }),
    ("anthropic/claude-sonnet-4", Price { input: 3.0, output: 15.0, cache_read: 0.3 }),
    ("anthropic/claude-haiku-4-5", Price { input: 1.0, output: 5.0, cache_read: 0.1 }),
    ("anthropic/claude-3-5-haiku", Price { input: 0.8, output: 4.0, cache_read: 0.08 }),
    ("openai/gpt-4.1", Price { input: 2.0, output: 8.0, cache_read: 0.5 }),
    ("openai/gpt-4.1-mini", Price { input: 0.4, output: 1.6, cache_read: 0.1 }),
    ("openai/gpt-4.1-nano", Price { input: 0.1, output: 0.4, cache_read: 0.025 }),
    ("openai/gpt-4o", Price { input: 2.5, output: 10.0, cache_read: 1.25 }),
    ("openai/gpt-4o-mini", Price { input: 0.15, output: 0.6, cache_read: 0.075 }),
    ("openai/gpt-5", Price { input: 1.25, output: 10.0, cache_read: 0.125 }),
    ("openai/gpt-5-mini", Price { input: 0.25, output: 2.0, cache_read: 0.025 }),
    ("openai/o3", Price { input: 2.0, output: 8.0, cache_read: 0.5 }),
    ("openai/o4-mini", Price { input: 1.1, output: 4.4, cache_read: 0.275 }),
];

/// The most entries `FLUE_PRICES` may hold.
const MAX_CONFIGURED: usize = 256;

/// The price of `model` (`provider/model`): `FLUE_PRICES` first, then the
/// list; `None` when neither knows it.
pub fn price_of(model: &str, config: &HashMap<String, String>) -> Option<Price> {
    if let Some(price) = config.get("FLUE_PRICES").and_then(|list| configured(list).remove(model)) {
        return Some(price);
    }
    KNOWN
        .iter()
        .filter(|(name, _)| model.starts_with(name) && !continues_a_longer_name(&model[name.len()..]))
        .max_by_key(|(name, _)| name.len())
        .map(|(_, price)| *price)
}

/// Whether what follows a known name makes it another model
/// (`gpt-4o` is not `gpt-4o-mini`'s price, but `claude-sonnet-4-6` is
/// `claude-sonnet-4`'s, and `gpt-4.1-2025-04-14` is `gpt-4.1`'s).
fn continues_a_longer_name(rest: &str) -> bool {
    let mut parts = rest.split('-');
    parts.next().is_some_and(|first| !first.is_empty())
        || parts.next().is_some_and(|word| word.chars().next().is_some_and(char::is_alphabetic))
}

/// `FLUE_PRICES`, read leniently: an entry that does not parse is left out.
fn configured(list: &str) -> HashMap<String, Price> {
    list.split(',')
        .take(MAX_CONFIGURED)
        .filter_map(|entry| {
            let (model, prices) = entry.trim().split_once('=')?;
            let numbers: Vec<f64> =
                prices.split('/').map(|n| n.trim().parse::<f64>()).collect::<Result<_, _>>().ok()?;
            let valid = |n: &f64| n.is_finite() && *n >= 0.0;
            match numbers[..] {
                [input, output, cache_read] if [input, output, cache_read].iter().all(valid) => {
                    Some((model.trim().to_string(), Price { input, output, cache_read }))
                }
                [input, output] if [input, output].iter().all(valid) => {
                    Some((model.trim().to_string(), Price { input, output, cache_read: input }))
                }
                _ => None,
            }
        })
        .collect()
}

/// What `usage` cost at `price`. `cache_included` says whether the
/// provider's input count includes the tokens read from the cache (OpenAI's
/// does, Anthropic's does not).
pub fn cost(price: Price, usage: &Usage, cache_included: bool) -> Cost {
    let cached = usage.cache_read.unwrap_or(0);
    let uncached = if cache_included { usage.input.saturating_sub(cached) } else { usage.input };
    let per = |tokens: u64, dollars: f64| tokens as f64 * dollars / 1_000_000.0;
    let (input, output, cache_read) =
        (per(uncached, price.input), per(usage.output, price.output), per(cached, price.cache_read));
    Cost { input, output, cache_read, total: input + output + cache_read }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_known_name_prices_a_model_and_an_unknown_one_has_no_price() {
        let none = HashMap::new();
        assert_eq!(price_of("openai/gpt-4o-mini", &none).unwrap().input, 0.15);
        assert_eq!(price_of("openai/gpt-4o", &none).unwrap().input, 2.5);
        assert_eq!(price_of("openai/gpt-4o-2024-08-06", &none).unwrap().input, 2.5);
        assert_eq!(price_of("openai/gpt-4.1-2025-04-14", &none).unwrap().output, 8.0);
        assert_eq!(price_of("anthropic/claude-sonnet-4-6", &none).unwrap().output, 15.0);
        assert_eq!(price_of("anthropic/claude-opus-4-6", &none).unwrap().output, 25.0);
        assert!(price_of("openai/gpt-4oops", &none).is_none());
        assert!(price_of("openai/llama3.2", &none).is_none());
    }

    #[test]
    fn flue_prices_adds_and_overrides_and_skips_what_does_not_parse() {
        let config = HashMap::from([(
            "FLUE_PRICES".to_string(),
            "openai/llama3.2=0/0, openai/gpt-4o=1/2/0.5, bad, x=1/NaN, y=-1/2".to_string(),
        )]);
        assert_eq!(price_of("openai/llama3.2", &config), Some(Price { input: 0.0, output: 0.0, cache_read: 0.0 }));
        assert_eq!(price_of("openai/gpt-4o", &config), Some(Price { input: 1.0, output: 2.0, cache_read: 0.5 }));
        assert!(price_of("x", &config).is_none() && price_of("y", &config).is_none());
    }

    #[test]
    fn cached_tokens_are_priced_apart_whichever_way_the_provider_counts_them() {
        let price = Price { input: 3.0, output: 15.0, cache_read: 0.3 };
        let usage = Usage { input: 1_000_000, output: 100_000, cache_read: Some(500_000) };
        let anthropic = cost(price, &usage, false);
        assert!((anthropic.total - (3.0 + 1.5 + 0.15)).abs() < 1e-9, "{anthropic:?}");
        let openai = cost(price, &usage, true);
        assert!((openai.input - 1.5).abs() < 1e-9 && (openai.total - (1.5 + 1.5 + 0.15)).abs() < 1e-9);
    }
}
