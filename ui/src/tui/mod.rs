//! The terminal interface: four tabs (Data, Train, Privacy, Private prediction), a help
//! overlay and a demo mode. Work runs on background threads that send events into one queue;
//! the loop here applies them and redraws. The terminal is restored on exit, on error and on
//! panic, and backends (training, parties) are stopped.
//!
//! Layering, bottom up (no module imports one above it): `tabs`, `theme` and `data::source`
//! (plain data); `graphics` (which protocol the terminal speaks); `backend` (what goes to and comes back from the backends, and their traits); `action`
//! and `event` (the queue); each tab's `state`, `keys` and `view`; `demo`; `app` (state and
//! input, `perform`); `ui` (draws the app). The implementations on the engine live in the
//! crate's `backends` module, which the interface never imports.

pub mod action;
pub mod app;
pub mod backend;
pub mod data;
pub mod demo;
pub mod event;
pub mod format;
pub mod graphics;
pub mod predict;
pub mod privacy;
pub mod projection;
pub mod tabs;
pub mod terminal;
pub mod theme;
pub mod train;
pub mod ui;
pub mod widgets;

use anyhow::Context;
use app::App;
use backend::Backends;
use data::DataSource;
use event::EventQueue;
use std::io::IsTerminal;
use std::path::PathBuf;
use theme::Theme;

/// How the interface starts.
pub struct TuiOptions {
    /// Data sources offered on the Data tab, the first selected.
    pub sources: Vec<DataSource>,
    /// Preprocessing cache folder; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Start the guided demo.
    pub demo: bool,
    /// Frames (ticks) per second.
    pub fps: f64,
    pub backends: Backends,
    pub theme: Theme,
}

impl TuiOptions {
    /// The default sources (data/chest_xray if present, else the bundled samples in `samples`
    /// plus the default synthetic set in data/synthetic-easy), cache in data/cache, the colour depth detected
    /// here, once (NO_COLOR, COLORTERM, TERM).
    pub fn new(samples: PathBuf, backends: Backends) -> Self {
        TuiOptions {
            sources: DataSource::defaults(
                &PathBuf::from("data/chest_xray"),
                &samples,
                &PathBuf::from(privxray::pipeline::DEFAULT_SYNTHETIC_DIR),
            ),
            cache_dir: Some(PathBuf::from("data/cache")),
            demo: false,
            fps: 30.0,
            backends,
            theme: Theme::from_env(),
        }
    }
}

/// Runs the interface until the user quits. Needs a terminal on stdout.
pub fn run(options: TuiOptions) -> anyhow::Result<()> {
    // A bad PRIVXRAY_GRAPHICS is an error before the screen changes.
    let env = graphics::Env::from_process();
    graphics::needs_query(&env)?;
    if !std::io::stdout().is_terminal() {
        anyhow::bail!(
            "the interactive interface needs a terminal on standard output; \
             use a subcommand instead (privxray --help)"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(options, env))
}

async fn run_async(mut options: TuiOptions, env: graphics::Env) -> anyhow::Result<()> {
    terminal::install_panic_hook();
    let mut term = terminal::Tui::enter().context("setting up the terminal")?;
    // Asked in raw mode and before the input reader starts, so the answers are not keys.
    options.theme.graphics = term.graphics(&env)?;
    let mut queue = EventQueue::with_terminal_input(options.fps);
    let mut app = App::new(
        options.sources,
        options.cache_dir,
        options.backends,
        queue.sender(),
        options.theme,
    );
    app.fps = options.fps;
    if options.demo {
        app.demo = Some(demo::Demo::new());
    }
    let result = event_loop(&mut term, &mut queue, &mut app).await;
    // Stop children before leaving, then restore the terminal (also done by drop on error).
    app.shutdown();
    term.leave()?;
    result
}

async fn event_loop(
    term: &mut terminal::Tui,
    queue: &mut EventQueue,
    app: &mut App,
) -> anyhow::Result<()> {
    // Sixel and iTerm2 images are sent from their first cell over cells ratatui then skips, so
    // text an overlay left there stays. After the help or the tab changes, a blank frame first
    // makes the next one send every cell, images included, again.
    let sent_once = matches!(
        app.theme.graphics.protocol,
        theme::Protocol::Sixel | theme::Protocol::Iterm2
    );
    let mut shown = (app.help, app.tab);
    loop {
        if sent_once && shown != (app.help, app.tab) {
            term.terminal
                .draw(|_| {})
                .context("drawing the interface")?;
        }
        shown = (app.help, app.tab);
        term.terminal
            .draw(|f| f.render_widget(&*app, f.area()))
            .context("drawing the interface")?;
        let Some(first) = queue.next().await else {
            return Ok(());
        };
        // Apply everything already queued before the next frame: a burst of progress events
        // costs one redraw.
        app.handle_event(first);
        for e in queue.drain() {
            if app.quit {
                break;
            }
            app.handle_event(e);
        }
        if app.quit {
            return Ok(());
        }
    }
}
