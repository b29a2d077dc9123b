//! What a client's text message does: a pure function from the message and the
//! connection's subscription state to the new state and the replies, in order. No socket, no
//! clock: every rule of the contract's client messages is unit-tested here.

use crate::protocol::{
    decode_client, parse_topics, ClientMessage, ErrorCode, ServerMessage, Topic, TopicSet,
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

/// Applies one client text message to `subscription` and returns the replies, in order.
pub fn apply(text: &str, subscription: &mut Subscription) -> Vec<ServerMessage<'static>> {
    let (names, subscribe) = match decode_client(text) {
        Ok(ClientMessage::Ping) => return vec![ServerMessage::Pong],
        Ok(ClientMessage::Subscribe(names)) => (names, true),
        Ok(ClientMessage::Unsubscribe(names)) => (names, false),
        Err(error) => return vec![ServerMessage::error(error.code, error.message)],
    };
    let (named, unknown) = parse_topics(names.iter().map(String::as_str));
    let mut topics = subscription.topics;
    let mut forbidden = Vec::new();
    for topic in named.iter() {
        if !subscribe {
            topics.remove(topic);
        } else if subscription.allowed.contains(topic) {
            topics.insert(topic);
        } else {
            forbidden.push(topic.name());
        }
    }
    if topics.len() > subscription.max_topics {
        let message = format!(
            "at most {} topics per connection; the subscription is unchanged",
            subscription.max_topics
        );
        return vec![ServerMessage::error(ErrorCode::TooManyTopics, message)];
    }
    subscription.topics = topics;
    let mut replies = vec![if subscribe {
        ServerMessage::Subscribed { topics }
    } else {
        ServerMessage::Unsubscribed { topics }
    }];
    if !unknown.is_empty() {
        replies.push(unknown_topic_error(&unknown));
    }
    if !forbidden.is_empty() {
        let message = format!("the token does not allow: {}", forbidden.join(", "));
        replies.push(ServerMessage::error(ErrorCode::Forbidden, message));
    }
    replies
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

    fn codes(replies: &[ServerMessage<'_>]) -> Vec<ErrorCode> {
        replies
            .iter()
            .filter_map(|reply| match reply {
                ServerMessage::Error { code, .. } => Some(*code),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn ping_answers_pong_and_changes_nothing() {
        let mut sub = state(&[ODDS]);
        assert_eq!(apply(r#"{"type":"ping"}"#, &mut sub), [ServerMessage::Pong]);
        assert_eq!(sub, state(&[ODDS]));
    }

    #[test]
    fn replies_carry_the_whole_set_after_the_change() {
        let mut sub = state(&[PROGRESS]);
        let replies = apply(
            r#"{"type":"subscribe","topics":["odds_updates"]}"#,
            &mut sub,
        );
        let both = set(&[ODDS, PROGRESS]);
        assert_eq!(replies, [ServerMessage::Subscribed { topics: both }]);
        assert_eq!(sub.topics, both);

        // The second time changes nothing and is still answered.
        for _ in 0..2 {
            let unsubscribe = r#"{"type":"unsubscribe","topics":["scrape_progress"]}"#;
            let only_odds = ServerMessage::Unsubscribed {
                topics: set(&[ODDS]),
            };
            assert_eq!(apply(unsubscribe, &mut sub), [only_odds]);
        }
        let replies = apply(r#"{"type":"subscribe","topics":[]}"#, &mut sub);
        assert_eq!(
            replies,
            [ServerMessage::Subscribed {
                topics: set(&[ODDS])
            }]
        );
    }

    #[test]
    fn unknown_names_are_reported_after_the_reply_and_the_rest_applies() {
        let mut sub = state(&[]);
        let replies = apply(
            r#"{"type":"subscribe","topics":["nope","odds_updates"]}"#,
            &mut sub,
        );
        assert_eq!(
            replies[0],
            ServerMessage::Subscribed {
                topics: set(&[ODDS])
            }
        );
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
        let replies = apply(
            r#"{"type":"subscribe","topics":["odds_updates","scrape_progress","nope"]}"#,
            &mut sub,
        );
        assert_eq!(
            replies[0],
            ServerMessage::Subscribed {
                topics: set(&[PROGRESS])
            }
        );
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
}
