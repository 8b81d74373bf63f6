"""The observation lexicon and the context cues of the offline CheXpert-14 labeler (rrg.score.clinical.labeler).

Everything the labeler knows about words lives here, as data, so it can be read and reviewed apart
from the code. Mention phrases are regular expressions matched, after the CheXpert labeler's text
cleaning (lower case, "and/or" -> "or", "a/b" -> "a or b"), at a word start; a pattern ends at a word end
unless it ends in `\\w*` (a stem). They follow the CheXpert labeler's lists
(stanfordmlgroup/chexpert-labeler, phrases/mention and phrases/unmention), rewritten as word-bounded
patterns because its raw substrings fire inside other words ("tube" in "tuberculosis", "plate" in
"plate-like atelectasis", "support" in "supportive"), plus the phrasing of IU X-Ray reports (marked
"IU"). Its negation and uncertainty rules are dependency-graph patterns (NegBio/ngrex) that need a
parser model; here the same cues are NegEx trigger phrases for negspacy (see rrg.score.clinical.labeler), starting
from negspacy's own clinical termset.

Departure from CheXpert, on purpose: mentions that only name a structure ("heart size", "the heart",
"cardiac silhouette", "mediastinum", "contour") are ANATOMY mentions. CheXpert labels such a mention
positive unless a rule negates it or makes it uncertain, so "The heart and lungs have [not changed] in
the interval" reads as cardiomegaly and "stable cardiomediastinal silhouette" as an uncertain enlarged
cardiomediastinum (its "stable/unchanged silhouette" rule). Here an anatomy mention counts only with a
cue in its scope: negation ("heart size is normal") -> negative, uncertainty ("borderline heart size")
-> uncertain, enlargement ("the heart is enlarged") -> positive; with none it is no mention at all.
"""

from __future__ import annotations

from negspacy.termsets import termset

# CheXpert's 14 observations, in the order of its label files and of CheXbert.
OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"
# Mentions of findings outside the 13 observations (CheXpert's phrases/mention/no_finding.txt): a
# positive or uncertain one means the report is not "No Finding", and it gets no label of its own.
OTHER_FINDING = "Other Finding"

# --------------------------------------------------------------------------------------------------
# Mentions: observation -> patterns. A pattern is a regex; "\w*" marks a stem.

MENTIONS: dict[str, list[str]] = {
    "Enlarged Cardiomediastinum": [
        r"cardiomediastin\w*",  # cardiomediastinal silhouette / contour / cardiomediastinum
        r"cardio mediastinal",  # IU: "Cardio mediastinal silhouette"
        r"mediastinum",
        r"mediastinal (?:contours?|silhouettes?|configuration|width|shadow|structures?)",
        r"mediastinal widening",
        r"mediastinal and hilar contours?",
        r"pericardial silhouette",
        r"cardiac silhouette and vascularity",
        r"contours?",  # CheXpert: "contour" (heart and mediastinal contours)
        r"(?:superior |upper )?mediastinal",  # IU: "prominence of superior mediastinal [structures]"
        r"paratracheal(?: stripe| soft tissues?)?",  # IU: "right paratracheal prominence" (mediastinum)
    ],
    "Cardiomegaly": [
        r"cardiomegaly",
        r"the heart",
        r"heart size",
        r"heart",  # IU: "Heart and mediastinum normal", "Normal heart."
        r"cardiac enlargement",
        r"cardiac size",
        r"cardiac shadow",
        r"cardiac contours?",
        r"cardiac silhouettes?",
        r"enlarged heart",
    ],
    "Lung Opacity": [
        r"opaci\w*",
        r"decreased translucency",
        r"increased density",
        r"air ?-?space (?:disease|process|opacit\w*)",
        r"infiltrat\w*",
        r"interstitial (?:markings?|patterns?|prominence|lung disease|opacit\w*|changes?|thickening)",
        r"reticula\w*",
        r"reticulonodular",
        r"parenchymal scarring",
        r"peribronchial (?:thickening|cuffing)",
        r"bronchial wall thickening",
        r"scar\w*",
    ],
    "Lung Lesion": [
        r"mass(?:es)?",
        r"nodular densit(?:y|ies)",
        r"nodular opaci\w*",
        r"nodul\w*",
        r"lump",
        r"cavitary lesions?",
        r"cavitation",
        r"carcinoma",
        r"neoplasms?",
        r"tumou?rs?",
        r"lesions?",  # IU: "lung lesion", "no suspicious lesion"
        r"metasta\w*",
        r"mass-?like",  # IU: "masslike opacification"
        r"cavit(?:y|ies)",
    ],
    "Edema": [
        r"edema",
        r"oedema",
        r"heart failure",
        r"chf",
        r"vascular congestion",
        r"pulmonary congestion",
        r"congestion",
        r"indistinctness",
        r"vascular prominence",
        r"cephalization",
        r"kerley",
    ],
    "Consolidation": [r"consolidat\w*"],
    "Pneumonia": [r"pneumoni\w*", r"infections?", r"infectious(?: process)?", r"bronchopneumonia"],
    "Atelectasis": [r"atelecta\w*", r"collapsed?"],
    "Pneumothorax": [r"pneumothora\w*", r"hydropneumothora\w*", r"hemopneumothora\w*"],
    "Pleural Effusion": [r"pleural fluid", r"effusions?", r"hydrothorax", r"hydropneumothora\w*"],
    "Pleural Other": [
        r"pleural thickening",
        r"pleural (?:plaques?|calcification)",
        r"fibrosis",
        r"fibrothorax",
        r"pleural scar\w*",
        r"pleural[- ]parenchymal (?:scar\w*|thickening)",
        r"pleuro-?parenchymal (?:scar\w*|thickening)",
        r"pleural[- ]peripheral scar\w*",  # IU
        r"fibrotic",  # "fibrotic changes": CheXpert files fibrosis here
        r"fissural thickening",  # IU: the fissures are pleura
        r"pleuro-?pericardial scar\w*",
        r"(?:bi)?apical (?:pleural )?(?:capping|thickening)",  # IU: "biapical pleural thickening"
        r"(?:bi)?apical fibronodular thickening",
    ],
    "Fracture": [r"fractures?", r"fractured"],
    "Support Devices": [
        r"pacer",
        r"lines?",
        r"picc",
        r"tubes?",
        r"valves?",
        r"catheters?",
        r"pacemakers?",
        r"hardware",
        r"arthroplast\w*",
        r"markers?",
        r"icd",
        r"defibrillators?",
        r"devices?",
        r"drains?",
        r"plates?",
        r"screws?",
        r"cannula",
        r"apparatus",
        r"coils?",
        r"support",
        r"equipment",
        r"mediport",
        r"tip",  # IU: "right chest XXXX tip is in the SVC" (the device's name anonymised)
        r"xxxx-a-xxxx",  # IU: Port-A-Cath, anonymised
        r"port-?a-?cath",
        r"(?:central venous|venous access) port",
        r"stents?",
        r"leads?",
    ],
    OTHER_FINDING: [  # CheXpert's no_finding.txt (findings outside the 13), word-bounded, plus IU's
        r"emphysema\w*",
        r"blunt\w*",
        r"elevat\w*",
        r"densit(?:y|ies)",
        r"eventration",
        r"\w*scolio\w*",  # levo- and dextroscoliosis too
        r"degenera\w*",
        r"calcifi\w*",
        r"hyperinflat\w*",
        r"bronchospasm",
        r"asthma",
        r"hernia\w*",
        r"copd",
        r"plaques?",
        r"osteophyt\w*",
        r"aortic disease",
        r"bronchiolitis",
        r"airways? disease",
        r"thickening",
        r"aspiration",
        r"bullae",
        r"bullous",
        r"contusion",
        r"atherosclero\w*",
        r"osteopenia",
        r"granulom\w*",
        r"pneumomediastinum",
        r"pneumoperitoneum",
        r"osteodystrophy",
        r"cuffing",
        r"irregular lucency",
        r"inflam\w*",
        r"fissure",
        r"hypertension",
        r"prominen\w*",
        r"kyphosis",
        r"kyphotic",
        r"hyperexpan\w*",
        r"bullet",
        r"thoracentesis",
        r"bronchitis",
        r"volume loss",
        r"deformit\w*",
        r"hemorrhage",
        r"hematoma",
        r"radiopaque",
        r"aerophagia",
        r"arthropathy",
        r"tracheostomy",
        # IU additions: findings its MeSH annotators index and CheXpert's list lacks.
        r"tortu\w*",  # tortuous aorta
        r"spondylo\w*",
        r"arthritis",
        r"ectatic",
        r"hyperlucen\w*",
        r"lucenc\w*",
        r"sternotomy",
        r"cabg",
        r"clips?",
        r"sutures?",
        r"wires?",
        r"postoperative",
        r"post-?surgical",
        r"surgical",
        r"cholecystectomy",
        r"mastectomy",
        r"pneumonectomy",
        r"lobectomy",
        r"flattening",
        r"flattened",
        r"bronchiectasis",
        r"sarcoid\w*",
        r"tubercul\w*",
        r"cyst\w*",
        r"aneurysm\w*",
        r"pectus",
        r"foreign bod\w*",
        r"implants?",
        r"low lung volumes?",
        r"hypoinflat\w*",
        r"hypoventilat\w*",
        r"crowding",
        r"enlarged",  # e.g. "enlarged pulmonary arteries": enlarged something other than the 13
    ],
}

# Mentions that name a structure, not a finding (see the module docstring): they count only with a
# negation, uncertainty or enlargement cue in scope.
ANATOMY_MENTIONS: frozenset[str] = frozenset(
    {
        r"cardiomediastin\w*",
        r"cardio mediastinal",
        r"mediastinum",
        r"mediastinal (?:contours?|silhouettes?|configuration|width|shadow|structures?)",
        r"mediastinal and hilar contours?",
        r"pericardial silhouette",
        r"cardiac silhouette and vascularity",
        r"contours?",
        r"(?:superior |upper )?mediastinal",
        r"paratracheal(?: stripe| soft tissues?)?",
        r"the heart",
        r"heart size",
        r"heart",
        r"cardiac size",
        r"cardiac shadow",
        r"cardiac contours?",
        r"cardiac silhouettes?",
    }
)

# Phrases that overlap a mention and cancel it (CheXpert's phrases/unmention plus its positional
# cardiac phrases, "over the heart", made in Extractor.add_unmention_phrases).
_POSITIONS = [
    p + s for p in ("over the", "overlying the", "in the") for s in ("", " superior", " left", " right")
]
UNMENTIONS: dict[str, list[str]] = {
    "Lung Lesion": [r"calcified nodul\w*", r"massive", r"massengale", r"mass effect"],
    "Pneumonia": [r"granulomatous infection"],  # a healed infection (granulomas), not pneumonia
    "Pleural Other": [r"cystic fibrosis"],  # a disease of the airways, not pleural fibrosis
    "Lung Opacity": [r"pleural scar\w*", r"scarring of the (?:pleura|apex|apices)"],
    "Pleural Effusion": [r"pericardial effusions?"],
    "Cardiomegaly": [rf"{p} (?:heart|cardiac silhouette|cardiac shadow|cardiac contour)" for p in _POSITIONS],
    "Enlarged Cardiomediastinum": [rf"{p} (?:mediastinum|cardiomediastin\w*|contour)" for p in _POSITIONS]
    + [r"(?<!mediastinal and )hilar contours?"]  # the hila are not the mediastinum
    + [
        r"(?:rib|clavic\w*|bone|bony|osseous|aortic|diaphragm\w*) contours?",
        r"contours? (?:of|irregularit\w*)",
    ],
    "Support Devices": [
        r"midline",
        r"lines? of (?:the )?(?:fissure|pleura)",
        r"(?:septal|kerley|interstitial|pleural|fissural|suture|b|lung) lines?",
        r"leads? to",
        r"tubes? of",
    ],
}

# --------------------------------------------------------------------------------------------------
# Context cues (NegEx triggers for negspacy). Each termset has the four keys negspacy expects.


def _negation_termset() -> dict[str, list[str]]:
    """negspacy's "en_clinical" termset with the radiology cues of CheXpert's negation.txt."""
    ts = termset("en_clinical")
    # CheXpert reads "X versus Y" as uncertain, not negated; "evaluate for" is a request, not a
    # finding (CheXpert: uncertain "correlate for"); "cannot" only negates in "cannot exclude",
    # which is uncertain (handled first, by PRE_NEGATION_UNCERTAINTY).
    ts.remove_patterns({"preceding_negations": ["versus", "evaluate for", "cannot", "can't", "cant", "ro"]})
    ts.add_patterns(
        {
            "preceding_negations": [
                "normal",  # "normal heart size"
                "unremarkable",
                "clear of",
                "resolution of",
                "resolved",
                "removal of",
                "interval removal of",
                "no evidence",
                "no definite",
                "no obvious",
                "no focal",
                "no acute",
                "not enlarged",
                "negative",
                "absent",
            ],
            "following_negations": [
                "normal",  # "heart size is normal", "within normal limits", "upper limits of normal"
                "unremarkable",
                "not enlarged",
                "not seen",
                "not identified",
                "not visualized",
                "not present",
                "not demonstrated",
                "not appreciated",
                "is absent",
                "are absent",
                "has resolved",
                "have resolved",
                "resolved",
                "removed",
                "has been removed",
                "have been removed",
                "negative",
                "not",  # "heart is not enlarged", "effusion is not seen"
            ],
            "pseudo_negations": [
                "not excluded",
                "not be excluded",
                "cannot exclude",
                "no new",
                "not well",  # "not well seen/visualized": uncertain
                "not clearly",
            ],
            "termination": [
                "otherwise",  # "atelectasis, otherwise normal"
                "with the exception",
                "except for",
                "other than",
                "remains",
                "there is",
                "there are",
                "there has been",
                "consistent with",
                "compatible with",
                "likely",
                "suggesting",
                "suggestive",
                "representing",
                "due to",
                "versus",
                "with",
                "and the",
                "and there",
                "; ",
                # A relative clause's negation qualifies the clause, not the lesion it follows: CheXpert's
                # dependency rules attach "not" in "a nodule that is not definitively calcified" to
                # "calcified", so the nodule stays positive.
                "that",
                "which",
            ],
        }
    )
    return ts.get_patterns()


def _termset(preceding: list[str], following: list[str], pseudo: list[str], termination: list[str]) -> dict:
    return {
        "preceding_negations": preceding,
        "following_negations": following,
        "pseudo_negations": pseudo,
        "termination": termination,
    }


NEGATION = _negation_termset()

# CheXpert's pre_negation_uncertainty.txt: these win over negation ("cannot exclude pneumonia",
# "no new consolidation": something may be there, it is not said to be absent).
PRE_NEGATION_UNCERTAINTY = _termset(
    preceding=["cannot exclude", "can not exclude", "cannot rule out", "can not rule out", "not rule out",
               "difficult to exclude", "no new", "cannot be excluded"],
    following=["not excluded", "not be excluded", "cannot be excluded", "not ruled out", "not be ruled out",
               "cannot be ruled out"],
    pseudo=[],
    termination=["but", "however", "although", "though", "otherwise", "; "],
)  # fmt: skip

# CheXpert's post_negation_uncertainty.txt, as cues.
UNCERTAINTY = _termset(
    preceding=[
        "possible", "possibly", "presumably", "probable", "probably", "questionable", "question of",
        "suspect", "suspected", "suspicious", "suspicion", "concern for", "concerning for", "worrisome",
        "may", "might", "could", "would", "can be", "may represent", "could represent", "may reflect",
        "differential", "versus", "vs", "or", "suggest", "suggests", "suggestion of", "suggestive of",
        "borderline", "equivocal", "cannot", "underlying", "early", "developing", "atypical",
        "not well", "not clearly", "poorly", "incompletely", "obscur", "obscuring", "obscures",
        "correlate", "correlation", "evaluate for", "evaluation for", "rule out", "question", "questioned",
        "maybe", "secondary to", "likely", "less likely", "favor", "favored",
    ],
    following=[
        "possible", "is possible", "suspected", "is suspected", "questioned", "or", "versus", "vs",
        "not well seen", "not well visualized", "not well evaluated", "poorly evaluated", "obscured",
        "is obscured", "are obscured", "could be present", "may be present", "borderline",
        "is borderline", "not clearly seen", "cannot be evaluated", "less likely", "likely",
        "not appreciated", "is not excluded", "in the differential", "differential",
    ],
    pseudo=["or no", "or not", "either", "no evidence"],
    # ", healed"/", old"/", stable": a comma and a new finding's own descriptor start a new clause; a hedge
    # before it ("densities most suggestive of artifacts, healed right 10th rib fracture noted") does not
    # reach the finding after it, as CheXpert's parse keeps the two clauses apart.
    termination=["but", "however", "although", "though", "otherwise", "; ", "there is", "there are", "with",
                 ", healed", ", old", ", chronic", ", stable", ", unchanged", ", again"],
)  # fmt: skip

# Cues that make an anatomy mention a finding ("the heart is enlarged", "enlarged cardiac silhouette",
# "widened mediastinum"). Negation and uncertainty are checked first.
ENLARGEMENT = _termset(
    preceding=["enlarged", "enlargement of", "large", "prominent", "prominence of", "widened", "widening of",
               "increased size", "cardiomegaly", "globular", "abnormal"],
    following=["enlarged", "enlargement", "is large", "are large", "prominent", "widened", "widening",
               "increased", "cardiomegaly", "globular", "abnormal"],
    pseudo=["not enlarged", "no enlargement", "no increase", "not increased"],
    # Enlargement qualifies the structure next to it: a comma ends its reach ("heart size
    # moderately enlarged, stable mediastinal contours").
    termination=["but", "however", "although", "though", "otherwise", ";", ",", "with"],
)  # fmt: skip
