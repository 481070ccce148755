package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"

	"github.com/gridbatch/gridbatch/internal/store"
)

// provenanceAttributes adds batch b's provenance to the attributes of an
// export (NetCDF global attributes, Parquet key-value metadata):
// gridbatch_provenance is the whole of it as JSON, as 'enqueuer status
// --json' prints it under provenance; the gridbatch_* others are its main
// parts; source and history name gridbatch's build and the batch's plan.
func provenanceAttributes(ctx context.Context, st *store.Store, b store.Batch, attrs map[string]string) error {
	p := b.Provenance
	if p == nil {
		return nil
	}
	var err error
	if p.Processes, err = st.ChunkProcesses(ctx, b.ID); err != nil {
		return err
	}
	js, err := json.Marshal(p)
	if err != nil {
		return err
	}
	files, err := json.Marshal(p.Model.Files)
	if err != nil {
		return err
	}
	decl, err := json.Marshal(p.Model.Declaration)
	if err != nil {
		return err
	}
	g := p.Gridbatch
	attrs["gridbatch_provenance"] = string(js)
	attrs["gridbatch_version"] = g.Version
	attrs["gridbatch_revision"] = g.Revision
	attrs["gridbatch_revision_modified"] = strconv.FormatBool(g.Modified)
	attrs["gridbatch_model_kind"] = p.Model.Kind
	attrs["gridbatch_model_digest"] = p.Model.Digest
	attrs["gridbatch_model_declaration"] = string(decl)
	attrs["gridbatch_model_files"] = string(files)
	attrs["gridbatch_inputs_sha256"] = p.Inputs.SHA256
	attrs["gridbatch_inputs_cells"] = strconv.FormatInt(p.Inputs.Cells, 10)
	attrs["source"] = fmt.Sprintf("gridbatch %s (revision %s), model %s (declaration sha256 %s)", g.Version, g.Revision, p.Model.Kind, p.Model.Digest)
	attrs["history"] += fmt.Sprintf(" of batch %s; %s planned by %s at %s, gridbatch %s",
		b.ID, b.ID, p.PlannedBy, p.PlannedAt.Format("2006-01-02T15:04:05Z"), g.Revision)
	return nil
}

// writeProvenanceSidecar writes the attributes of a CSV export, which has
// nowhere to put them, to out + ".provenance.json".
func writeProvenanceSidecar(out string, attrs map[string]string) (string, error) {
	path := out + ".provenance.json"
	js, err := json.MarshalIndent(attrs, "", "  ")
	if err != nil {
		return "", err
	}
	return path, os.WriteFile(path, append(js, '\n'), 0o644)
}
