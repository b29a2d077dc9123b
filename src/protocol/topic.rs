//! Topics and sets of topics.

use std::fmt;

use serde::{Serialize, Serializer};

/// A pub/sub topic. The declaration order is the sorted order of the names, which is the
/// order the contract wants topic lists in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Topic {
    /// Risk alerts and surebets from the odds analysis (*extension*): for those who watch
    /// odds for a bookmaker.
    Alerts,
    /// The changed snapshots themselves, from one source (*extension*): for clients that
    /// would otherwise refetch every id `odds_updates` names.
    OddsChanges,
    /// Which events changed, from which source.
    OddsUpdates,
    /// Progress of scrape runs.
    ScrapeProgress,
}

impl Topic {
    /// Every topic, sorted by name.
    pub const ALL: [Topic; 4] = [
        Topic::Alerts,
        Topic::OddsChanges,
        Topic::OddsUpdates,
        Topic::ScrapeProgress,
    ];

    /// The topic's wire name.
    pub fn name(self) -> &'static str {
        match self {
            Topic::Alerts => "alerts",
            Topic::OddsChanges => "odds_changes",
            Topic::OddsUpdates => "odds_updates",
            Topic::ScrapeProgress => "scrape_progress",
        }
    }

    /// Parses a wire name; `None` for a name that is not a topic.
    pub fn from_name(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Dense index, for per-topic arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of topics; iterates in sorted order. A bitmask, so it is `Copy` and costs a byte.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicSet(u8);

impl TopicSet {
    /// The set of every topic.
    pub fn all() -> TopicSet {
        Topic::ALL.into_iter().collect()
    }

    /// What a connection that names no topics gets: the topics of v1. `odds_changes` carries
    /// whole snapshots and `alerts` serves another reader, so only clients that ask get them.
    pub fn defaults() -> TopicSet {
        [Topic::OddsUpdates, Topic::ScrapeProgress]
            .into_iter()
            .collect()
    }

    /// The topics in both sets.
    pub fn intersection(self, other: TopicSet) -> TopicSet {
        TopicSet(self.0 & other.0)
    }

    /// Whether `topic` is in the set.
    pub fn contains(self, topic: Topic) -> bool {
        self.0 & (1 << topic.index()) != 0
    }

    /// Adds `topic`.
    pub fn insert(&mut self, topic: Topic) {
        self.0 |= 1 << topic.index();
    }

    /// Removes `topic`.
    pub fn remove(&mut self, topic: Topic) {
        self.0 &= !(1 << topic.index());
    }

    /// The topics in sorted order.
    pub fn iter(self) -> impl Iterator<Item = Topic> {
        Topic::ALL.into_iter().filter(move |t| self.contains(*t))
    }

    /// Number of topics in the set.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The first `n` topics of the set, in sorted order.
    pub fn first(self, n: usize) -> TopicSet {
        self.iter().take(n).collect()
    }

    /// The wire names, sorted.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Topic::name).collect()
    }
}

impl FromIterator<Topic> for TopicSet {
    fn from_iter<I: IntoIterator<Item = Topic>>(iter: I) -> Self {
        let mut set = TopicSet::default();
        for topic in iter {
            set.insert(topic);
        }
        set
    }
}

impl Serialize for TopicSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// Splits topic names into the known topics and the names that are not topics.
pub fn parse_topics<'a>(names: impl IntoIterator<Item = &'a str>) -> (TopicSet, Vec<String>) {
    let mut known = TopicSet::default();
    let mut unknown = Vec::new();
    for name in names {
        match Topic::from_name(name) {
            Some(topic) => known.insert(topic),
            None => unknown.push(name.to_owned()),
        }
    }
    (known, unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_sets_serialise_sorted() {
        let set: TopicSet = [Topic::ScrapeProgress, Topic::OddsUpdates]
            .into_iter()
            .collect();
        assert_eq!(
            serde_json::to_string(&set).unwrap(),
            r#"["odds_updates","scrape_progress"]"#
        );
        assert_eq!(set.first(1).names(), ["odds_updates"]);
    }
}
