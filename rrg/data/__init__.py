"""Data: IU X-Ray (and other datasets) from their downloads to split files of entries."""
