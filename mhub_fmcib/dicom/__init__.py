"""DICOM import: index a folder from headers, assemble CT volumes, place SEG masks on CT grids."""
