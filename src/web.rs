//! The live odds board: a plain HTML/CSS/JS page compiled into the binary and served at `/`,
//! so the board needs no web server and no build step (`web/` holds its files).

use warp::filters::BoxedFilter;
use warp::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use warp::reply::Response;
use warp::{Filter, Reply};

const INDEX: &str = include_str!("../web/index.html");
const APP: &str = include_str!("../web/app.js");
const BOARD: &str = include_str!("../web/board.js");
const CHART: &str = include_str!("../web/chart.js");
const STYLE: &str = include_str!("../web/style.css");
const ICON: &str = include_str!("../web/favicon.svg");
const CLIENT: &str = include_str!("../web/oddsbus-client.js");

/// `GET /`, `/app.js` (with its modules `/board.js` and `/chart.js`), `/style.css`,
/// `/favicon.svg` and `/oddsbus-client.js`, the client module any page can import. The page learns the configured sources (its table's
/// columns) from a `<meta>` tag filled in here; source names are validated to
/// `[a-z0-9_-]` at start-up, so they need no escaping.
pub fn routes(sources: &[&str]) -> BoxedFilter<(Response,)> {
    let index = INDEX.replace("{{SOURCES}}", &sources.join(","));
    let page = warp::path::end()
        .and(warp::get())
        .map(move || asset(index.clone(), "text/html; charset=utf-8"));
    let script = |name: &'static str, body: &'static str| {
        warp::path(name)
            .and(warp::path::end())
            .and(warp::get())
            .map(move || asset(body.to_owned(), "text/javascript; charset=utf-8"))
    };
    let app = script("app.js", APP)
        .or(script("board.js", BOARD))
        .unify()
        .or(script("chart.js", CHART))
        .unify();
    let style = warp::path!("style.css")
        .and(warp::get())
        .map(|| asset(STYLE.to_owned(), "text/css; charset=utf-8"));
    let icon = warp::path!("favicon.svg")
        .and(warp::get())
        .map(|| asset(ICON.to_owned(), "image/svg+xml"));
    let client = warp::path!("oddsbus-client.js")
        .and(warp::get())
        .map(|| asset(CLIENT.to_owned(), "text/javascript; charset=utf-8"));
    // Boxed: the type of a long chain of filters is deep enough to trip the compiler.
    page.or(app)
        .unify()
        .or(style)
        .unify()
        .or(icon)
        .unify()
        .or(client)
        .unify()
        .boxed()
}

fn asset(body: String, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        content_type.parse().expect("a valid header value"),
    );
    // Always revalidate: a new binary may serve a new page.
    headers.insert(
        CACHE_CONTROL,
        "no-cache".parse().expect("a valid header value"),
    );
    response
}
