//! Labellings: any class folders, the pneumonia subtype by file name, and label tables.

use super::*;
use std::fs;

fn png(path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_pixel(8, 8, image::Luma([100]))
        .save(path)
        .unwrap();
}

fn names(c: &ClassNames) -> Vec<&str> {
    c.names().iter().map(String::as_str).collect()
}

#[test]
fn any_class_folders_are_classes_sorted_and_a_missing_one_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    for (split, class, n) in [
        ("train", "fox", 2),
        ("train", "cat", 3),
        ("train", "dog", 1),
    ] {
        for i in 0..n {
            png(&r.join(split).join(class).join(format!("{i}.png")));
        }
    }
    png(&r.join("test/dog/a.png"));
    png(&r.join("test/cat/a.png"));
    let index = scan(r).unwrap();
    assert_eq!(names(&index.classes), ["cat", "dog", "fox"]);
    let train: Vec<(&str, &str)> = index
        .items
        .iter()
        .filter(|i| i.split == Split::Train)
        .map(|i| {
            let folder = i.path.parent().unwrap().file_name().unwrap();
            (folder.to_str().unwrap(), index.classes.name(i.label))
        })
        .collect();
    assert_eq!(train.len(), 6);
    assert!(
        train.iter().all(|(folder, class)| folder == class),
        "{train:?}"
    );
    assert!(
        index
            .skipped
            .iter()
            .any(|s| s.path.ends_with("test/fox") && s.reason.contains("missing class folder fox")),
        "{:?}",
        index.skipped
    );
    // One class alone is not a classification task.
    let one = tempfile::tempdir().unwrap();
    png(&one.path().join("only/a.png"));
    let e = scan(one.path()).unwrap_err().to_string();
    assert!(e.contains("at least two"), "{e}");
}

#[test]
fn the_kermany_layout_stays_binary_even_with_one_class_folder() {
    let dir = tempfile::tempdir().unwrap();
    png(&dir.path().join("train/PNEUMONIA/person1_virus_1.png"));
    let index = scan(dir.path()).unwrap();
    assert_eq!(index.classes, ClassNames::binary());
    assert_eq!(index.items[0].label, Label(1));
}

#[test]
fn subtype_labels_come_from_file_names_and_a_neither_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    png(&r.join("train/NORMAL/IM-1.png"));
    png(&r.join("train/PNEUMONIA/person1_bacteria_2.png"));
    png(&r.join("train/PNEUMONIA/person3_VIRUS_4.png"));
    png(&r.join("train/PNEUMONIA/person5_6.png"));
    let index = scan_with(r, &Labelling::Subtype).unwrap();
    assert_eq!(names(&index.classes), ["BACTERIA", "NORMAL", "VIRUS"]);
    let got: Vec<(String, &str)> = index
        .items
        .iter()
        .map(|i| {
            let f = i.path.file_name().unwrap().to_string_lossy().into_owned();
            (f, index.classes.name(i.label))
        })
        .collect();
    let want = [
        ("person1_bacteria_2.png", "BACTERIA"),
        ("IM-1.png", "NORMAL"),
        ("person3_VIRUS_4.png", "VIRUS"),
    ];
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.0.as_str(), g.1), w);
    }
    let neither = index
        .skipped
        .iter()
        .find(|s| s.path.ends_with("person5_6.png"))
        .expect("the unnamed pneumonia file is reported");
    assert!(neither.reason.contains("neither bacteria nor virus"));
    // Binary labelling of the same folder is unchanged.
    let binary = scan(r).unwrap();
    assert_eq!(binary.classes, ClassNames::binary());
    assert_eq!(binary.items.len(), 4);
    // Subtype needs the Kermany folders.
    let other = tempfile::tempdir().unwrap();
    png(&other.path().join("cat/a.png"));
    png(&other.path().join("dog/a.png"));
    let e = scan_with(other.path(), &Labelling::Subtype).unwrap_err();
    assert!(
        e.to_string()
            .contains("needs class folders NORMAL and PNEUMONIA"),
        "{e}"
    );
}

#[test]
fn a_label_table_labels_files_and_names_file_and_line_of_a_bad_row() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    png(&r.join("train/x1.png"));
    png(&r.join("train/x2.png"));
    png(&r.join("test/y,1.png"));
    png(&r.join("loose.png"));
    let csv = r.join("labels.csv");
    fs::write(
        &csv,
        "path,label\ntrain/x1.png,zebra\ntrain/x2.png, ant\n\ntest/y,1.png,zebra\nloose.png,ant\nmissing.png,ant\n",
    )
    .unwrap();
    let index = scan_with(r, &Labelling::Csv(csv.clone())).unwrap();
    assert_eq!(names(&index.classes), ["ant", "zebra"]);
    let got: Vec<(Split, String, &str)> = index
        .items
        .iter()
        .map(|i| {
            let rel = i
                .path
                .strip_prefix(r)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (i.split, rel, index.classes.name(i.label))
        })
        .collect();
    assert_eq!(
        got,
        [
            (Split::Train, "train/x2.png".to_string(), "ant"),
            (Split::Train, "train/x1.png".to_string(), "zebra"),
            (Split::Test, "test/y,1.png".to_string(), "zebra"),
            (Split::Single, "loose.png".to_string(), "ant"),
        ]
    );
    let missing = index
        .skipped
        .iter()
        .find(|s| s.path.ends_with("missing.png"))
        .unwrap();
    assert!(
        missing.reason.contains("labels.csv line 7"),
        "{}",
        missing.reason
    );

    for (text, line, says) in [
        ("train/x1.png,a\nno comma here\n", 2, "expected path,label"),
        ("train/x1.png,a\ntrain/x2.png,\n", 2, "empty path or label"),
        ("path,label\n../x.png,a\n", 2, "relative to the data root"),
        ("/etc/x.png,a\n", 1, "relative to the data root"),
        (
            "train/x1.png,a\ntrain/x2.png,b\ntrain/x1.png,b\n",
            3,
            "listed twice",
        ),
    ] {
        fs::write(&csv, text).unwrap();
        let e = scan_with(r, &Labelling::Csv(csv.clone()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("labels.csv line {line}:")),
            "{text:?}: {e}"
        );
        assert!(e.contains(says), "{text:?}: {e}");
    }
    fs::write(&csv, "train/x1.png,a\ntrain/x2.png,a\n").unwrap();
    let e = scan_with(r, &Labelling::Csv(csv.clone()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("labels.csv") && e.contains("at least two"),
        "{e}"
    );
    let e = scan_with(r, &Labelling::Csv(r.join("nope.csv")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.csv"), "{e}");
}

#[test]
fn labelling_parses_its_three_forms() {
    assert_eq!(Labelling::parse("subtype").unwrap(), Labelling::Subtype);
    assert_eq!(Labelling::parse("folders").unwrap(), Labelling::Folders);
    assert_eq!(
        Labelling::parse("a/b.CSV").unwrap(),
        Labelling::Csv("a/b.CSV".into())
    );
    assert!(Labelling::parse("three").unwrap_err().contains("three"));
}
