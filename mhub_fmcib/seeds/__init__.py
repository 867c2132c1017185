"""Stage 2: seed points in LPS mm, from DICOM segments (SEG, RTSTRUCT), mask files and seeds CSVs."""
