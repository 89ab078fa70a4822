//! `synth` and `preprocess`, and the data source used when no dataset is present.
//!
//! Imports the engine (`data`, `model`, `pipeline`, `preprocess`, `synth`) only; no sibling,
//! never `tui` or `backends`.

use anyhow::bail;
use clap::Args;
use privxray::data::open::{DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS};
use privxray::data::{labels, ClassNames, Labelling};
use privxray::model::Technique;
use privxray::pipeline;
use privxray::preprocess::{self, ImportLimits, Progress, Summary};
use privxray::synth::{self, SynthOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output folder (train/, test/, val/ each with NORMAL/ and PNEUMONIA/ are created).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of images to write.
    #[arg(long)]
    pub count: usize,
    /// Random seed (generation is deterministic in it).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// easy: strong opacities, little exposure change (what the interface generates by
    /// default, so a run learns in minutes on two cores); standard: faint opacities among
    /// confounders. Both are SYNTHETIC.
    #[arg(long, default_value = "standard")]
    pub difficulty: privxray::synth::Difficulty,
}

pub fn synth(args: SynthArgs) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    let mut opts = SynthOptions::new(args.count, args.seed);
    opts.difficulty = args.difficulty;
    let written = synth::generate(&args.out, &opts)?;
    let normal = written
        .iter()
        .filter(|s| s.class == privxray::data::Class::Normal)
        .count();
    println!(
        "wrote {} SYNTHETIC images ({}; {} NORMAL, {} PNEUMONIA) to {} in {:.1} s",
        written.len(),
        args.difficulty.name(),
        normal,
        written.len() - normal,
        args.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct PreprocessArgs {
    /// Dataset root: ROOT/{train,test,val}/{NORMAL,PNEUMONIA}/*.jpeg (or NORMAL/ and PNEUMONIA/
    /// directly under ROOT).
    #[arg(long)]
    pub input: PathBuf,
    /// 1: greyscale 1x150x125; 2: bicubic 3x224x224.
    #[arg(long, value_parser = parse_technique)]
    pub technique: Technique,
    /// Cache folder (default: data/cache). The cache makes a second run instant.
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Do not read or write a cache.
    #[arg(long, conflicts_with = "cache")]
    pub no_cache: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub labels: LabelArgs,
}

/// Where a dataset's labels come from.
#[derive(Debug, Clone, Args)]
pub struct LabelArgs {
    /// `folders`: the class folder names, sorted (the Kermany layout: NORMAL, PNEUMONIA);
    /// `subtype`: the Kermany PNEUMONIA folder split by file name into BACTERIA and VIRUS
    /// (classes BACTERIA, NORMAL, VIRUS); or FILE.csv: `path,label` rows, paths relative to
    /// the data root. Default: folders (for a checkpoint, the labelling its classes came from).
    #[arg(long, value_name = "folders|subtype|FILE.csv", value_parser = parse_labels)]
    pub labels: Option<Labelling>,
}

fn parse_labels(s: &str) -> Result<Labelling, String> {
    Labelling::parse(s)
}

impl LabelArgs {
    /// The labelling given, else the class folders.
    pub fn labelling(&self) -> Labelling {
        self.labels.clone().unwrap_or_default()
    }
    /// The labelling given, else the one that yields `classes` (a checkpoint's): the subtype
    /// classes come from `subtype`, any others from the folders.
    pub fn labelling_for(&self, classes: &ClassNames) -> Labelling {
        match &self.labels {
            Some(l) => l.clone(),
            None if *classes == labels::subtype_classes() => Labelling::Subtype,
            None => Labelling::Folders,
        }
    }
}

/// The caps every imported file is held to; a file over one is refused with a report line.
#[derive(Debug, Clone, Copy, Args)]
pub struct LimitArgs {
    /// Largest file imported, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_MAX_FILE_BYTES >> 20,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_file_mb: u64,
    /// Largest image imported, in megapixels (width x height from the header, before decoding).
    #[arg(long, value_name = "MP", default_value_t = DEFAULT_MAX_PIXELS / 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_megapixels: u64,
}

impl LimitArgs {
    pub fn limits(&self) -> ImportLimits {
        ImportLimits::new(self.max_file_mb, self.max_megapixels)
    }
}

pub fn parse_technique(s: &str) -> Result<Technique, String> {
    s.parse::<u8>()
        .ok()
        .and_then(Technique::from_number)
        .ok_or_else(|| format!("technique must be 1 or 2, got {s:?}"))
}

/// A progress line on stderr, redrawn in place when stderr is a terminal.
pub fn progress_printer(label: &'static str) -> impl Fn(Progress) + Sync {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    move |p: Progress| {
        if tty && (p.done.is_multiple_of(16) || p.done == p.total) {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r{label}: {}/{} ({} cached)", p.done, p.total, p.cached);
            if p.done == p.total {
                let _ = writeln!(e);
            }
        }
    }
}

pub fn preprocess(args: PreprocessArgs) -> anyhow::Result<()> {
    let cache = if args.no_cache {
        None
    } else {
        Some(
            args.cache
                .clone()
                .unwrap_or_else(|| PathBuf::from("data/cache")),
        )
    };
    let (_, summary) = preprocess::run_with(
        &args.input,
        args.technique,
        &args.labels.labelling(),
        cache.as_deref(),
        &args.limits.limits(),
        &progress_printer("preprocessing"),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(())
}

pub fn print_summary(s: &Summary) {
    println!(
        "{}: technique {}, {} images ({} decoded, {} from cache) in {:.2} s, {:.1} images/s",
        s.root.display(),
        s.technique,
        s.images,
        s.decoded,
        s.from_cache,
        s.seconds,
        s.images_per_second
    );
    print!("{:<8}", "split");
    for name in &s.classes {
        print!(" {name:>10}");
    }
    println!();
    for c in &s.counts {
        print!("{:<8}", c.split);
        for n in &c.per_class {
            print!(" {n:>10}");
        }
        println!();
    }
    if let Some(note) = &s.cache_note {
        println!("note: {note}");
    }
    if s.skipped.is_empty() {
        println!("skipped: none");
    } else {
        println!("skipped {}:", s.skipped.len());
        for k in &s.skipped {
            println!("  {k}");
        }
    }
}

/// Where the demo data lives when no real dataset is present: the bundled real samples in
/// assets/samples plus the default synthetic set, generated once in data/synthetic-easy.
pub struct DataSource {
    pub root: PathBuf,
    pub description: String,
    pub synthetic: bool,
}

pub const REAL_DATASET: &str = "data/chest_xray";

/// The real dataset if present, otherwise a synthetic set (generated once) for training.
pub fn default_training_source() -> anyhow::Result<DataSource> {
    let real = Path::new(REAL_DATASET);
    if real.is_dir() {
        return Ok(DataSource {
            root: real.to_path_buf(),
            description: format!("real dataset at {REAL_DATASET}"),
            synthetic: false,
        });
    }
    let synth_dir = PathBuf::from(pipeline::DEFAULT_SYNTHETIC_DIR);
    let opts = pipeline::default_synthetic_options();
    pipeline::ensure_synthetic(&synth_dir, &opts, || {})?;
    Ok(DataSource {
        description: format!(
            "no dataset at {REAL_DATASET}: using {} {} SYNTHETIC images in {} \
             (accuracy on them says nothing about real radiographs)",
            opts.count,
            opts.difficulty.name(),
            synth_dir.display()
        ),
        root: synth_dir,
        synthetic: true,
    })
}

/// The bundled real radiographs (Kermany et al. 2018, CC BY 4.0), shipped in assets/samples.
pub fn bundled_samples() -> PathBuf {
    let here = PathBuf::from("assets/samples");
    if here.is_dir() {
        return here;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/samples")
}

/// What runs with no subcommand and no terminal: a headless walk through the data stage.
pub fn default_job() -> anyhow::Result<()> {
    let source = default_training_source()?;
    println!("privxray: {}", source.description);
    if source.synthetic {
        println!("(put the Kermany set in {REAL_DATASET} to work on real radiographs)");
    }
    let samples = bundled_samples();
    if !samples.is_dir() {
        bail!("bundled samples missing at {}", samples.display());
    }
    let (_, s) = preprocess::run(&samples, Technique::T1, None, &|_| {})?;
    println!("bundled real samples (Kermany et al. 2018, CC BY 4.0):");
    print_summary(&s);
    let (_, s) = preprocess::run(
        &source.root,
        Technique::T1,
        Some(Path::new("data/cache")),
        &progress_printer("preprocessing"),
    )?;
    print_summary(&s);
    Ok(())
}
