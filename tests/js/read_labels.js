// Reads a TID 1500 SR and a SEG with dcmjs (the DICOM library OHIF uses) and prints, as
// JSON, what a viewer built on it would show: the Tracking Identifier and seed coordinates of
// every measurement group, and the label, tracking id and colour of every segment.
// Usage: node read_labels.js SR.dcm SEG.dcm
"use strict";
const fs = require("fs");
const dcmjs = require("dcmjs");

function naturalize(path) {
  const buf = fs.readFileSync(path);
  const ab = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
  const dicom = dcmjs.data.DicomMessage.readFile(ab);
  return dcmjs.data.DicomMetaDictionary.naturalizeDataset(dicom.dict);
}

function asArray(v) {
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}

function meaning(item) {
  return asArray(item.ConceptNameCodeSequence)[0].CodeMeaning;
}

function srGroups(sr) {
  const root = asArray(sr.ContentSequence);
  const imaging = root.find((it) => meaning(it) === "Imaging Measurements");
  return asArray(imaging.ContentSequence).map((group) => {
    const out = { trackingIdentifier: null, trackingUid: null, seed: {}, scoord3d: [], features: 0 };
    for (const it of asArray(group.ContentSequence)) {
      const name = meaning(it);
      if (it.ValueType === "TEXT" && name === "Tracking Identifier") out.trackingIdentifier = it.TextValue;
      else if (it.ValueType === "UIDREF" && name === "Tracking Unique Identifier") out.trackingUid = it.UID;
      else if (it.ValueType === "SCOORD3D") out.scoord3d.push({ name, graphicType: it.GraphicType, data: asArray(it.GraphicData) });
      else if (it.ValueType === "NUM") {
        const code = asArray(it.ConceptNameCodeSequence)[0].CodeValue;
        const mv = asArray(it.MeasuredValueSequence)[0];
        if (code.startsWith("feature_")) out.features += 1;
        else if (code.startsWith("seed-")) out.seed[code[5]] = Number(mv.NumericValue);
      }
    }
    return out;
  });
}

function segSegments(seg) {
  return asArray(seg.SegmentSequence).map((s) => ({
    number: s.SegmentNumber,
    label: s.SegmentLabel,
    trackingId: s.TrackingID,
    trackingUid: s.TrackingUID,
    cielab: asArray(s.RecommendedDisplayCIELabValue),
  }));
}

const [srPath, segPath] = process.argv.slice(2);
const report = { sr: null, seg: null };
if (srPath) {
  const sr = naturalize(srPath);
  report.sr = { seriesDescription: sr.SeriesDescription, groups: srGroups(sr) };
}
if (segPath) {
  const seg = naturalize(segPath);
  report.seg = { seriesDescription: seg.SeriesDescription, segments: segSegments(seg) };
}
process.stdout.write(JSON.stringify(report) + "\n");
