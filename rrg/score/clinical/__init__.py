"""Clinical efficacy: the offline CheXpert-14 labeler, its lexicon, MeSH labels, label F1."""
