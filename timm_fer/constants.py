"""Label names of the FER benchmarks, in each dataset's own label order."""

RAFDB_LABELS = ('surprise', 'fear', 'disgust', 'happiness', 'sadness', 'anger', 'neutral')
"""RAF-DB basic: labels 1..7 of ``list_patition_label.txt``, shifted to 0..6."""

FERPLUS_LABELS = ('neutral', 'happiness', 'surprise', 'sadness', 'anger', 'disgust', 'fear', 'contempt')
"""FERPlus: the first eight vote columns of ``fer2013new.csv`` (unknown and not-a-face are dropped)."""

AFFECTNET7_LABELS = ('neutral', 'happiness', 'sadness', 'surprise', 'fear', 'disgust', 'anger')
"""AffectNet expression labels 0..6 of ``training.csv`` / ``validation.csv``."""

AFFECTNET8_LABELS = AFFECTNET7_LABELS + ('contempt',)
"""AffectNet expression labels 0..7 (label 7 is contempt)."""

HF_HUB_ORG = 'timm-fer'
"""Hugging Face Hub organisation that holds timm-fer's weights: each tag lives at ``{HF_HUB_ORG}/{model}.{tag}``."""

PUBLISHED_ON_HUB = frozenset()
"""Tags whose weights have been pushed to ``{HF_HUB_ORG}/{model}.{tag}``: only these get an ``hf_hub_id``, so
``timm.list_pretrained()`` lists only weights that load, and ``pretrained=True`` on another tag fails at once
instead of asking the Hub. Add a tag here in the commit that publishes it."""

DEFAULT_FACE_TEMPLATE = 'arcface'
"""The face template (``timm_fer.faces.FACE_TEMPLATES``) of models whose tag or checkpoint names none."""
