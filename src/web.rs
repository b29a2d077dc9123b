//! The live odds board: a plain HTML/CSS/JS page compiled into the binary and served at `/`,
//! so the board needs no web server and no build step (`web/` holds its files).

use warp::filters::BoxedFilter;
use warp::http::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use warp::reply::Response;
use warp::{Filter, Reply};

const INDEX: &str = include_str!("../web/index.html");
const STYLE: &str = include_str!("../web/style.css");
const ICON: &str = include_str!("../web/favicon.svg");
const CLIENT_TYPES: &str = include_str!("../web/oddsbus-client.d.ts");

/// The scripts, by name: the board's modules, and the client module any page can import.
const SCRIPTS: [(&str, &str); 5] = [
    ("app.js", include_str!("../web/app.js")),
    ("board.js", include_str!("../web/board.js")),
    ("chart.js", include_str!("../web/chart.js")),
    ("alerts.js", include_str!("../web/alerts.js")),
    (
        "oddsbus-client.js",
        include_str!("../web/oddsbus-client.js"),
    ),
];

/// `GET /`, `/app.js` (with its modules `/board.js`, `/chart.js` and `/alerts.js`),
/// `/style.css`, `/favicon.svg`, and `/oddsbus-client.js`, the client module any page can
/// import (its types at `/oddsbus-client.d.ts`). The page
/// learns the configured sources (its table's columns) and where the price history is kept
/// (`database`: days of it, so its chart offers ranges; else `memory`) from `<meta>` tags
/// filled in here; source names are validated to `[a-z0-9_-]` at start-up, so they need no
/// escaping.
pub fn routes(sources: &[&str], database: bool) -> BoxedFilter<(Response,)> {
    let history = if database { "database" } else { "memory" };
    let index = INDEX
        .replace("{{SOURCES}}", &sources.join(","))
        .replace("{{HISTORY}}", history);
    let page = warp::path::end()
        .and(warp::get())
        .map(move || asset(index.clone(), "text/html; charset=utf-8"));
    let scripts = warp::path::param::<String>()
        .and(warp::path::end())
        .and(warp::get())
        .and_then(|name: String| async move {
            let (_, body) = SCRIPTS
                .iter()
                .find(|(script, _)| *script == name)
                .ok_or_else(warp::reject::not_found)?;
            Ok::<_, warp::Rejection>(asset((*body).to_owned(), "text/javascript; charset=utf-8"))
        });
    let style = warp::path!("style.css")
        .and(warp::get())
        .map(|| asset(STYLE.to_owned(), "text/css; charset=utf-8"));
    let icon = warp::path!("favicon.svg")
        .and(warp::get())
        .map(|| asset(ICON.to_owned(), "image/svg+xml"));
    let types = warp::path!("oddsbus-client.d.ts").and(warp::get()).map(|| {
        asset(
            CLIENT_TYPES.to_owned(),
            "application/typescript; charset=utf-8",
        )
    });
    // Boxed: the type of a long chain of filters is deep enough to trip the compiler.
    page.or(scripts)
        .unify()
        .or(style)
        .unify()
        .or(icon)
        .unify()
        .or(types)
        .unify()
        .boxed()
}

/// What the board may load and do: its own scripts, styles and images, connections to its
/// own origin only (the WebSocket and the reads), and no framing by another site (a page
/// that frames it could trick a person into clicking "Scrape now").
const BOARD_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'none'";

fn asset(body: String, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Always revalidate: a new binary may serve a new page.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(BOARD_POLICY),
    );
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // The board's address may carry `#token=`; no other site learns the page's address.
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}
