"""IU X-Ray's manual MeSH annotations as CheXpert-14 labels, to validate the offline labeler against.

Every IU X-Ray report carries a `MeSH` field written by annotators at indexing time: terms joined by
";", each a heading with "/"-joined qualifiers ("Opacity/lung/base/left/mild", "Cardiomegaly/borderline"),
or "normal", or "No Indexing" (not annotated). The annotators index what a report says is there,
including what it calls borderline or possible ("no definite pleural effusion" was indexed as
"Pleural Effusion/borderline"), and never what it says is absent; so the table gives positives only,
and an observation without a mapped term is "not positive".

MESH_RULES maps a heading (optionally only with a qualifier) to a CheXpert observation, following the
CheXpert labeler's definitions of each observation (its mention lists): e.g. a scar ("Cicatrix") of the
lung is a Lung Opacity but a pleural scar is Pleural Other, fibrosis is Pleural Other, a calcified
granuloma or a lung "Density" is none of the 13. "normal" is No Finding. Headings not listed are findings
outside the 13 (emphysema, degenerative spine, granuloma, ...), which CheXpert also does not label. Two
observations have no MeSH heading that says the same thing: Pneumonia has one ("Pneumonia"), Lung Lesion
has "Nodule"/"Mass"; Enlarged Cardiomediastinum has only "Mediastinum/prominent|enlarged|widened".
"""

from __future__ import annotations

from dataclasses import dataclass

from rrg.io import InputError

NOT_ANNOTATED = "No Indexing"


@dataclass(frozen=True)
class MeshRule:
    heading: str  # the MeSH heading, as written in indiana_reports.csv
    observation: str
    qualifiers: frozenset[str] = frozenset()  # if set, one of these qualifiers is required
    excluded: frozenset[str] = frozenset()  # a term with one of these qualifiers does not map
    why: str = ""


def _q(*names: str) -> frozenset[str]:
    return frozenset(names)


MESH_RULES: tuple[MeshRule, ...] = (
    MeshRule("normal", "No Finding", why="the report names no finding at all"),
    MeshRule("Cardiomegaly", "Cardiomegaly"),
    MeshRule("Cardiac Shadow", "Cardiomegaly", _q("enlarged", "borderline"), why="enlarged cardiac silhouette"),
    MeshRule("Mediastinum", "Enlarged Cardiomediastinum", _q("prominent", "enlarged", "widened")),
    MeshRule("Opacity", "Lung Opacity", excluded=_q("pleura", "breast", "ribs", "mediastinum"),
             why="CheXpert: opacity"),
    MeshRule("Airspace Disease", "Lung Opacity", why="CheXpert: airspace disease"),
    MeshRule("Infiltrate", "Lung Opacity", why="CheXpert: infiltrate"),
    MeshRule("Markings", "Lung Opacity", _q("interstitial", "reticular"), why="CheXpert: interstitial marking"),
    MeshRule("Lung Diseases, Interstitial", "Lung Opacity", why="CheXpert: interstitial lung / pattern"),
    MeshRule("Cicatrix", "Lung Opacity", _q("lung"), excluded=_q("pleura"), why="CheXpert: scar (of the lung)"),
    MeshRule("Cicatrix", "Pleural Other", _q("pleura"), why="CheXpert: pleural scar"),
    MeshRule("Nodule", "Lung Lesion", excluded=_q("calcified", "heart", "breast"),
             why="CheXpert: nodule (a calcified nodule is not a lesion)"),
    MeshRule("Mass", "Lung Lesion", excluded=_q("breast"), why="CheXpert: mass"),
    MeshRule("Opacity", "Lung Lesion", _q("round"), excluded=_q("breast", "ribs"),
             why="CheXpert: nodular opacity (MeSH indexes one as a round opacity)"),
    MeshRule("Density", "Lung Lesion", _q("round"), excluded=_q("breast", "ribs"),
             why="CheXpert: nodular density (MeSH: a round density)"),
    MeshRule("Cavitation", "Lung Lesion", why="CheXpert: cavitary lesion"),
    MeshRule("Pulmonary Edema", "Edema"),
    MeshRule("Pulmonary Congestion", "Edema", why="CheXpert: pulmonary / vascular congestion"),
    MeshRule("Heart Failure", "Edema", why="CheXpert: heart failure, chf"),
    MeshRule("Consolidation", "Consolidation"),
    MeshRule("Pneumonia", "Pneumonia"),
    MeshRule("Pulmonary Atelectasis", "Atelectasis"),
    MeshRule("Pneumothorax", "Pneumothorax"),
    MeshRule("Hydropneumothorax", "Pneumothorax"),
    MeshRule("Hemopneumothorax", "Pneumothorax"),
    MeshRule("Pleural Effusion", "Pleural Effusion"),
    MeshRule("Hydropneumothorax", "Pleural Effusion", why="fluid and air in the pleural space"),
    MeshRule("Thickening", "Pleural Other", _q("pleura"), why="CheXpert: pleural thickening"),
    MeshRule("Pleura", "Pleural Other", _q("thickening", "thickened")),
    MeshRule("Pulmonary Fibrosis", "Pleural Other", why="CheXpert files fibrosis under Pleural Other"),
    MeshRule("Fibrosis", "Pleural Other", why="CheXpert files fibrosis under Pleural Other"),
    MeshRule("Fractures, Bone", "Fracture"),
    MeshRule("Catheters, Indwelling", "Support Devices", why="CheXpert: catheter, line, port"),
    MeshRule("Implanted Medical Device", "Support Devices", why="CheXpert: pacemaker, device, valve"),
    MeshRule("Medical Device", "Support Devices", why="CheXpert: device"),
    MeshRule("Tube, Inserted", "Support Devices", why="CheXpert: tube"),
    MeshRule("Stents", "Support Devices", why="a device; CheXpert's list lacks stents, ours has them"),
)  # fmt: skip

# Headings that name no finding: devices (CheXpert's No Finding ignores them) and image quality.
NOT_FINDINGS = frozenset(
    [r.heading for r in MESH_RULES if r.observation in ("No Finding", "Support Devices")]
    + ["Technical Quality of Image Unsatisfactory"]
)

# Observations at least one rule maps to: the ones MeSH can validate.
COVERED = tuple(dict.fromkeys(rule.observation for rule in MESH_RULES))


def parse_mesh(field: str) -> list[tuple[str, frozenset[str]]]:
    """'Opacity/lung/base;Cardiomegaly' -> [("Opacity", {"lung", "base"}), ("Cardiomegaly", {})]."""
    terms = []
    for term in field.split(";"):
        parts = [p.strip() for p in term.split("/")]
        if parts[0]:
            terms.append((parts[0], frozenset(p.lower() for p in parts[1:] if p)))
    return terms


def mesh_observations(field: str | None, where: str = "MeSH") -> set[str] | None:
    """The CheXpert observations a MeSH field marks positive; None for "No Indexing" (not annotated)."""
    if field is None or not str(field).strip():
        raise InputError(f"{where}: empty MeSH field")
    terms = parse_mesh(str(field))
    if any(heading == NOT_ANNOTATED for heading, _ in terms):
        return None
    found = set()
    for heading, qualifiers in terms:
        for rule in MESH_RULES:
            if heading.lower() != rule.heading.lower():
                continue
            if rule.qualifiers and not (qualifiers & rule.qualifiers):
                continue
            if qualifiers & rule.excluded:
                continue
            found.add(rule.observation)
    # CheXpert's No Finding ignores support devices; the annotators' "normal" does not, so a report
    # whose only terms are devices (or image quality) is No Finding too.
    if found <= {"Support Devices"} and all(heading in NOT_FINDINGS for heading, _ in terms):
        found.add("No Finding")
    return found
