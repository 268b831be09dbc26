//! "Did you mean ...?": the nearest of a set of known names to a misspelt
//! one (pure). Used for unknown configuration keys, alert actions and
//! metrics, and event types close to a declared one.

/// The candidate nearest to `word`, if one is near enough to be a likely
/// typo: at most 1 edit for names of up to 4 characters, 2 up to 8, and 3
/// beyond (optimal string alignment distance: a swap of two neighbouring
/// letters is one edit). Failing that, a candidate that `word` is the
/// start of (`limit` for `limit_usd`, at least 4 characters). Ties go to
/// the first candidate.
pub fn nearest<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
    I::IntoIter: Clone,
{
    let candidates = candidates.into_iter();
    by_edits(word, candidates.clone()).or_else(|| completion(word, candidates))
}

fn by_edits<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let limit = max_edits(word);
    let mut best: Option<(usize, &'a str)> = None;
    for c in candidates {
        if c == word {
            continue;
        }
        let d = strsim::osa_distance(word, c);
        if d <= limit && best.is_none_or(|(b, _)| d < b) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// The candidate within a few edits of `word` (as in [`nearest`], without
/// completions), skipping by length first: cheap enough for every event of
/// an undeclared type.
pub fn within_edits<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let limit = max_edits(word);
    let len = word.len();
    by_edits(
        word,
        candidates
            .into_iter()
            .filter(|c| c.len().abs_diff(len) <= limit),
    )
}

/// A candidate that starts with `word`, for [`nearest`].
fn completion<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    if word.chars().count() < 4 {
        return None;
    }
    candidates
        .into_iter()
        .find(|c| c.len() > word.len() && c.starts_with(word))
}

fn max_edits(word: &str) -> usize {
    match word.chars().count() {
        0..=4 => 1,
        5..=8 => 2,
        _ => 3,
    }
}

/// `; did you mean `x`?` when a candidate is near, else nothing: ready to
/// append to an error message.
pub fn did_you_mean<'a, I>(word: &str, candidates: I) -> String
where
    I: IntoIterator<Item = &'a str>,
    I::IntoIter: Clone,
{
    match nearest(word, candidates) {
        Some(s) => format!("; did you mean `{s}`?"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOP: [&str; 9] = [
        "version",
        "events",
        "destinations",
        "metrics",
        "alerts",
        "notifiers",
        "budgets",
        "strict",
        "limits",
    ];

    #[test]
    fn typos_find_their_key() {
        assert_eq!(nearest("budget", TOP), Some("budgets"));
        assert_eq!(nearest("alert", TOP), Some("alerts"));
        assert_eq!(nearest("stric", TOP), Some("strict"));
        assert_eq!(nearest("notifers", TOP), Some("notifiers"));
        assert_eq!(nearest("evnets", TOP), Some("events"));
        assert_eq!(
            nearest("agent_complete", ["agent_started", "agent_completed"]),
            Some("agent_completed")
        );
        assert_eq!(
            nearest("notify_admn", ["notify_admin", "warn_user"]),
            Some("notify_admin")
        );
    }

    #[test]
    fn far_words_and_exact_matches_suggest_nothing() {
        assert_eq!(nearest("limit", ["scope", "limit_usd"]), Some("limit_usd"));
        assert_eq!(
            nearest("window", ["window_minutes"]),
            Some("window_minutes")
        );
        assert_eq!(nearest("zebra", TOP), None);
        assert_eq!(nearest("x", ["alerts"]), None);
        assert_eq!(nearest("budgets", TOP), None);
        assert_eq!(nearest("circuit_breaker_open", ["agent_completed"]), None);
        assert_eq!(did_you_mean("zebra", TOP), "");
        assert_eq!(did_you_mean("budget", TOP), "; did you mean `budgets`?");
    }
}
