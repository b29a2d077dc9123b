//! What a client's text message does: a pure function from the message and the
//! connection's subscription state to the new state and the replies, in order. No socket, no
//! clock: every rule of the contract's client messages is unit-tested here.

use crate::protocol::{
    decode_client, parse_topics, BadSince, ClientMessage, ErrorCode, Position, ServerMessage,
    SinceEntry, Topic, TopicSet,
};

/// A connection's subscription state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    /// Topics subscribed now.
    pub topics: TopicSet,
    /// Topics the connection's token allows.
    pub allowed: TopicSet,
    /// Most topics the connection may hold (`--max-topics-per-connection`).
    pub max_topics: usize,
}

/// One reply to a client message.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Sent as it is.
    Message(ServerMessage<'static>),
    /// `subscribed`, once the connection has joined each topic of `join` (with its `since`),
    /// carrying their positions; `topics` is the whole set after the change.
    Subscribed {
        /// The subscription set after the change.
        topics: TopicSet,
        /// The topics the request named that are now subscribed, each with its `since`.
        join: Vec<(Topic, Option<Position>)>,
    },
}

/// Applies one client text message to `subscription` and returns the replies, in order.
pub fn apply(text: &str, subscription: &mut Subscription) -> Vec<Reply> {
    let (names, since, subscribe) = match decode_client(text) {
        Ok(ClientMessage::Ping) => return vec![Reply::Message(ServerMessage::Pong)],
        Ok(ClientMessage::Subscribe(names, since)) => (names, since, true),
        Ok(ClientMessage::Unsubscribe(names)) => (names, Vec::new(), false),
        Err(error) => {
            let refusal = ServerMessage::error(error.code, error.message);
            return vec![Reply::Message(refusal)];
        }
    };
    let (named, unknown) = parse_topics(names.iter().map(String::as_str));
    let mut topics = subscription.topics;
    let mut joined = TopicSet::default();
    let mut forbidden = Vec::new();
    for topic in named.iter() {
        if !subscribe {
            topics.remove(topic);
        } else if subscription.allowed.contains(topic) {
            topics.insert(topic);
            joined.insert(topic);
        } else {
            forbidden.push(topic.name());
        }
    }
    if topics.len() > subscription.max_topics {
        let message = format!(
            "at most {} topics per connection; the subscription is unchanged",
            subscription.max_topics
        );
        let refusal = ServerMessage::error(ErrorCode::TooManyTopics, message);
        return vec![Reply::Message(refusal)];
    }
    subscription.topics = topics;
    let (join, bad_since) = since_for(joined, since);
    let mut replies = vec![if subscribe {
        Reply::Subscribed { topics, join }
    } else {
        Reply::Message(ServerMessage::Unsubscribed { topics })
    }];
    if !unknown.is_empty() {
        replies.push(Reply::Message(unknown_topic_error(&unknown)));
    }
    if !forbidden.is_empty() {
        let message = format!("the token does not allow: {}", forbidden.join(", "));
        replies.push(Reply::Message(ServerMessage::error(
            ErrorCode::Forbidden,
            message,
        )));
    }
    replies.extend(bad_since.into_iter().map(Reply::Message));
    replies
}

/// Each topic of `topics` with its `since` entry, if any, and an `invalid_message` error for
/// every malformed entry (its topic is joined as if no `since` had been given). Entries for
/// topics not in `topics` are ignored.
pub fn since_for(
    topics: TopicSet,
    since: Vec<SinceEntry>,
) -> (Vec<(Topic, Option<Position>)>, Vec<ServerMessage<'static>>) {
    let mut positions: Vec<(Topic, Option<Position>)> = topics.iter().map(|t| (t, None)).collect();
    let mut errors = Vec::new();
    for entry in since {
        match entry {
            Ok((topic, position)) => {
                if let Some((_, slot)) = positions.iter_mut().find(|(t, _)| *t == topic) {
                    *slot = Some(position);
                }
            }
            Err(BadSince(reason)) => {
                errors.push(ServerMessage::error(ErrorCode::InvalidMessage, reason));
            }
        }
    }
    (positions, errors)
}

/// The `unknown_topic` error for `names`, listing the valid ones.
pub fn unknown_topic_error(names: &[String]) -> ServerMessage<'static> {
    let valid: Vec<&str> = Topic::ALL.iter().map(|t| t.name()).collect();
    let message = format!(
        "unknown topic(s): {}; valid topics: {}",
        names.join(", "),
        valid.join(", ")
    );
    ServerMessage::error(ErrorCode::UnknownTopic, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ODDS: Topic = Topic::OddsUpdates;
    const PROGRESS: Topic = Topic::ScrapeProgress;

    fn set(topics: &[Topic]) -> TopicSet {
        topics.iter().copied().collect()
    }

    fn state(topics: &[Topic]) -> Subscription {
        Subscription {
            topics: set(topics),
            allowed: TopicSet::all(),
            max_topics: 16,
        }
    }

    fn codes(replies: &[Reply]) -> Vec<ErrorCode> {
        replies
            .iter()
            .filter_map(|reply| match reply {
                Reply::Message(ServerMessage::Error { code, .. }) => Some(*code),
                _ => None,
            })
            .collect()
    }

    fn subscribed(topics: &[Topic], join: &[Topic]) -> Reply {
        Reply::Subscribed {
            topics: set(topics),
            join: join.iter().map(|t| (*t, None)).collect(),
        }
    }

    #[test]
    fn ping_answers_pong_and_changes_nothing() {
        let mut sub = state(&[ODDS]);
        let replies = apply(r#"{"type":"ping"}"#, &mut sub);
        assert_eq!(replies, [Reply::Message(ServerMessage::Pong)]);
        assert_eq!(sub, state(&[ODDS]));
    }

    #[test]
    fn replies_carry_the_whole_set_after_the_change() {
        let mut sub = state(&[PROGRESS]);
        let replies = apply(
            r#"{"type":"subscribe","topics":["odds_updates"]}"#,
            &mut sub,
        );
        assert_eq!(replies, [subscribed(&[ODDS, PROGRESS], &[ODDS])]);
        assert_eq!(sub.topics, set(&[ODDS, PROGRESS]));

        // The second time changes nothing and is still answered.
        for _ in 0..2 {
            let unsubscribe = r#"{"type":"unsubscribe","topics":["scrape_progress"]}"#;
            let only_odds = ServerMessage::Unsubscribed {
                topics: set(&[ODDS]),
            };
            assert_eq!(apply(unsubscribe, &mut sub), [Reply::Message(only_odds)]);
        }
        let replies = apply(r#"{"type":"subscribe","topics":[]}"#, &mut sub);
        assert_eq!(replies, [subscribed(&[ODDS], &[])]);
    }

    #[test]
    fn unknown_names_are_reported_after_the_reply_and_the_rest_applies() {
        let mut sub = state(&[]);
        let text = r#"{"type":"subscribe","topics":["nope","odds_updates"]}"#;
        let replies = apply(text, &mut sub);
        assert_eq!(replies[0], subscribed(&[ODDS], &[ODDS]));
        assert_eq!(codes(&replies), [ErrorCode::UnknownTopic]);
        assert_eq!(replies.len(), 2);
    }

    #[test]
    fn bad_messages_get_their_code_and_change_nothing() {
        for (text, code) in [
            ("nope", ErrorCode::InvalidJson),
            ("{}", ErrorCode::UnknownType),
            (r#"{"type":"subscribe"}"#, ErrorCode::InvalidMessage),
        ] {
            let mut sub = state(&[ODDS]);
            let replies = apply(text, &mut sub);
            assert_eq!(codes(&replies), [code], "{text}");
            assert_eq!(replies.len(), 1);
            assert_eq!(sub, state(&[ODDS]));
        }
    }

    #[test]
    fn topics_the_token_forbids_are_refused_and_the_others_apply() {
        let mut sub = Subscription {
            allowed: set(&[PROGRESS]),
            ..state(&[])
        };
        let text = r#"{"type":"subscribe","topics":["odds_updates","scrape_progress","nope"]}"#;
        let replies = apply(text, &mut sub);
        assert_eq!(replies[0], subscribed(&[PROGRESS], &[PROGRESS]));
        assert_eq!(
            codes(&replies),
            [ErrorCode::UnknownTopic, ErrorCode::Forbidden]
        );
        assert_eq!(sub.topics, set(&[PROGRESS]));
    }

    #[test]
    fn a_subscription_over_the_limit_is_refused_whole() {
        let mut sub = Subscription {
            max_topics: 1,
            ..state(&[ODDS])
        };
        let replies = apply(
            r#"{"type":"subscribe","topics":["scrape_progress"]}"#,
            &mut sub,
        );
        assert_eq!(codes(&replies), [ErrorCode::TooManyTopics]);
        assert_eq!(replies.len(), 1, "no subscribed reply");
        assert_eq!(sub.topics, set(&[ODDS]));
    }

    #[test]
    fn since_goes_with_its_topic_and_each_malformed_entry_gets_its_error() {
        let mut sub = state(&[]);
        let text = r#"{"type":"subscribe","topics":["odds_updates"],
            "since":{"odds_updates":{"epoch":"e1","offset":5},
                     "scrape_progress":{"epoch":"e1","offset":1},
                     "nope":{"epoch":"e1","offset":1}}}"#;
        let replies = apply(text, &mut sub);
        let since = Position {
            epoch: "e1".into(),
            offset: 5,
        };
        let expected = Reply::Subscribed {
            topics: set(&[ODDS]),
            join: vec![(ODDS, Some(since))],
        };
        assert_eq!(replies[0], expected, "scrape_progress's entry is ignored");
        assert_eq!(
            codes(&replies),
            [ErrorCode::InvalidMessage],
            "`nope` is malformed"
        );
    }
}
