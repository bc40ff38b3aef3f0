"""Tests of the corpus builder's logic on tiny synthetic audio: no apt, no network."""

import json
import zipfile

import numpy as np
import pytest
import soundfile as sf

from training.corpus import (
    SAMPLE_RATE,
    ManifestEntry,
    SourceReport,
    build_source,
    extract_archive,
    read_journal,
    read_manifest,
    rebuild_manifest,
    split_chunks,
    write_manifest,
)
from training.sources import (
    ALL,
    SOURCES,
    SOURCES_BY_NAME,
    Item,
    Source,
    group_of,
    package_items,
    parse_stamp_text,
    safe_name,
    split_for,
)

MANIFEST_KEYS = {
    "path",
    "source_package",
    "original_path",
    "license",
    "duration",
    "split",
    "kind",
    "group",
    "sample_rate",
}


def tone(seconds: float, rate: int = 22050, channels: int = 2) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.repeat((0.3 * np.sin(2 * np.pi * 440 * t))[:, None], channels, 1).astype(np.float32)


def tiny_source(**overrides) -> Source:
    fields = dict(
        name="tiny",
        package="tiny-pkg",
        kind="speech",
        license="GPL-2",
        group_regex=r"^(?P<group>[^/]+)/",
        val_groups=frozenset({"held"}),
    )
    return Source(**{**fields, **overrides})


def tiny_items(groups=("a", "held"), seconds=1.0) -> list[Item]:
    return [
        Item(f"{g}__clip{i}", f"usr/share/tiny/{g}/clip{i}.ogg", g, lambda s=seconds: (tone(s), 22050))
        for g in groups
        for i in range(2)
    ]


def failing_items(groups=("a", "held")) -> list[Item]:
    def load():
        raise AssertionError("a built item was decoded again")

    return [Item(f"{g}__clip{i}", f"usr/share/tiny/{g}/clip{i}.ogg", g, load) for g in groups for i in range(2)]


def test_split_by_group_and_whole_source():
    source = tiny_source()
    assert split_for(source, "held") == "val"
    assert split_for(source, "a") == "train"
    assert split_for(tiny_source(val_groups=frozenset({ALL})), "a") == "val"


def test_groups_read_from_paths():
    tux = SOURCES_BY_NAME["tuxpaint-stamps-default"]
    assert group_of(tux, "animals/frog_desc_ca.ogg") == "ca"
    assert group_of(tux, "food/lettuce_desc_pt_BR.wav") == "pt_BR"
    assert group_of(tux, "animals/frog_desc.ogg") == "en"
    assert group_of(tux, "town/flag_desc_da.ogg.ogg") == "da"
    assert group_of(SOURCES_BY_NAME["klettres-data"], "uk/alpha/a.ogg") == "uk"
    assert group_of(SOURCES_BY_NAME["hedgewars-voices"], "Pirate/Drat.ogg") == "Pirate"
    assert group_of(SOURCES_BY_NAME["fillets-ng-data-cs"], "city/cs/x.ogg") == "cs"


def test_file_names_in_other_scripts_stay_distinct():
    # gcin-voice names its folders by Bopomofo syllable: "_" for each would make them collide.
    names = {safe_name(f"{syllable}/3.ogg") for syllable in ("ㄊㄢ3", "ㄊㄢ4", "ㄅㄚ1", "ㄅㄚ2")}
    assert len(names) == 4 and all(n.isascii() and n.endswith("__3") for n in names)
    assert safe_name("animals/frog desc (1).ogg") == "animals__frog_desc__1_"  # ASCII as before


def test_every_default_source_is_unambiguous():
    names = [s.name for s in SOURCES]
    assert len(names) == len(set(names))
    assert {"0ad-data", "fillets-ng-data-nl"}.isdisjoint(s.name for s in SOURCES if s.default)
    assert all(s.kind in ("speech", "tts", "music") for s in SOURCES)
    assert all(split_for(s, "any") == "train" for s in SOURCES if s.kind == "tts")


def test_manifest_round_trip(tmp_path):
    entries = [
        ManifestEntry("train/speech/p/a.flac", "p", "usr/a.ogg", "GPL-2", 1.5, "train", "speech", "ca"),
        ManifestEntry("val/music/q/b_c001.flac", "q", "usr/b ü.ogg", "MIT", 30.0, "val", "music", "q"),
    ]
    path = tmp_path / "manifest.jsonl"
    write_manifest(path, entries)
    lines = path.read_text().splitlines()
    assert all(set(json.loads(line)) == MANIFEST_KEYS for line in lines)
    assert read_manifest(path) == entries
    assert json.loads(lines[0])["sample_rate"] == 16000


def test_chunks_are_at_most_30_s_and_lose_nothing():
    audio = np.zeros(65 * SAMPLE_RATE, dtype=np.float32)
    chunks = split_chunks(audio)
    assert len(chunks) == 3
    assert all(len(c) <= 30 * SAMPLE_RATE for c in chunks)
    assert sum(len(c) for c in chunks) == len(audio)
    assert len(split_chunks(audio[:SAMPLE_RATE])) == 1


def test_build_writes_16k_mono_flac_by_split(tmp_path):
    source, report = tiny_source(), SourceReport(tiny_source())
    build_source(source, tiny_items(), tmp_path, report)
    entries = rebuild_manifest(tmp_path)
    assert len(entries) == 4 and report.files == 4
    assert {e.split for e in entries if e.group == "held"} == {"val"}
    assert {e.split for e in entries if e.group == "a"} == {"train"}
    for entry in entries:
        assert entry.path.startswith(f"{entry.split}/speech/tiny-pkg/")
        info = sf.info(tmp_path / entry.path)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert entry.duration == pytest.approx(1.0, abs=1e-3)
    assert not list(tmp_path.rglob("*.tmp"))


def test_short_silent_and_narrowband_recordings_are_dropped(tmp_path):
    items = [
        Item("short", "short.ogg", "a", lambda: (tone(0.1), 22050)),
        Item("silent", "silent.ogg", "a", lambda: (np.zeros((22050, 1), np.float32), 22050)),
        Item("narrow", "narrow.wav", "a", lambda: (tone(1.0, 8000), 8000)),
    ]
    report = SourceReport(tiny_source())
    build_source(tiny_source(), items, tmp_path, report)
    assert report.dropped == 3 and report.files == 0


def test_decode_failures_are_reported_not_dropped_silently(tmp_path, capsys):
    def broken():
        raise RuntimeError("not an ogg")

    report = SourceReport(tiny_source())
    build_source(tiny_source(), [Item("bad", "usr/bad.ogg", "a", broken)], tmp_path, report)
    assert report.failed == ["usr/bad.ogg"]
    assert "usr/bad.ogg" in capsys.readouterr().out
    assert read_journal(tmp_path / "parts" / "tiny.jsonl") == {}  # retried on the next run


def test_rerun_skips_what_is_built_and_redoes_what_is_missing(tmp_path):
    source = tiny_source()
    build_source(source, tiny_items(), tmp_path, SourceReport(source))
    build_source(source, failing_items(), tmp_path, SourceReport(source))  # nothing decoded

    (tmp_path / "train/speech/tiny-pkg/a__clip0.flac").unlink()
    journal = tmp_path / "parts" / "tiny.jsonl"
    with journal.open("a") as f:
        f.write('{"name": "held__clip1", "entr')  # a crash mid-line
    items = failing_items()
    items[0] = tiny_items()[0]  # only the deleted clip may be decoded
    report = SourceReport(source)
    build_source(source, items, tmp_path, report)
    assert report.files == 4
    assert len(rebuild_manifest(tmp_path)) == 4
    assert set(read_journal(journal)) == {"a__clip0", "a__clip1", "held__clip0", "held__clip1"}


def test_rerun_redoes_items_whose_split_changed(tmp_path):
    build_source(tiny_source(), tiny_items(), tmp_path, SourceReport(tiny_source()))
    moved = tiny_source(val_groups=frozenset({"a"}))
    build_source(moved, tiny_items(), tmp_path, SourceReport(moved))
    splits = {e.group: e.split for e in rebuild_manifest(tmp_path)}
    assert splits == {"a": "val", "held": "train"}


def test_minutes_cap_stops_a_source(tmp_path):
    report = SourceReport(tiny_source())
    build_source(tiny_source(), tiny_items(seconds=2.0), tmp_path, report, max_seconds=3.0)
    assert report.files == 2


def test_package_items_skip_copies_and_name_outputs(tmp_path):
    root = tmp_path / "usr/share/tiny"
    for rel, data in {"a/x.wav": tone(0.5), "a/y.wav": tone(0.5), "b/z.wav": tone(0.7)}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, data, 22050)
    source = tiny_source(root="usr/share/tiny", patterns=("*/*.wav",))
    items, copies = package_items(source, tmp_path, tmp_path)
    assert copies == 1
    assert [(i.name, i.original_path, i.group) for i in items] == [
        ("a__x", "usr/share/tiny/a/x.wav", "a"),
        ("b__z", "usr/share/tiny/b/z.wav", "b"),
    ]
    samples, rate = items[1].load()
    assert rate == 22050 and samples.shape == (int(0.7 * 22050), 2)


def test_stamp_text_parsing():
    text = "A frog.\nca.utf8=Una granota.\npt_BR.utf8=Um sapo.\nsr@latin.utf8=Žaba.\nxx.utf8=\n"
    assert parse_stamp_text(text) == {"en": "A frog.", "ca": "Una granota.", "pt_BR": "Um sapo.", "sr@latin": "Žaba."}


def test_archive_extraction_keeps_only_audio_members(tmp_path):
    zip_path = tmp_path / "public.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("audio/music/a.ogg", b"ogg")
        archive.writestr("art/texture.png", b"png")
        archive.writestr("audio/../../escape.ogg", b"bad")
    dest = extract_archive(zip_path, "audio/", tmp_path / "_archive")
    assert [p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()] == ["audio/music/a.ogg"]
    assert not (tmp_path / "escape.ogg").exists()


def test_a_package_unpacks_into_a_fresh_cache(tmp_path):
    """dpkg -x creates only its last directory: the first package of a new cache used to fail."""
    import shutil
    import subprocess

    from training.corpus import unpack_deb

    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb not installed")
    root = tmp_path / "src"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: tiny\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n"
    )
    (root / "usr/share/tiny").mkdir(parents=True)
    (root / "usr/share/tiny/a.txt").write_text("hello")
    deb = tmp_path / "tiny_1_all.deb"
    subprocess.run(["dpkg-deb", "--build", str(root), str(deb)], check=True, capture_output=True)
    target = unpack_deb(deb, "tiny", tmp_path / "new-cache")
    assert (target / "usr/share/tiny/a.txt").read_text() == "hello"
