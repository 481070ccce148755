package main

import (
	"context"
	"errors"
	"io"

	"github.com/gridbatch/gridbatch/internal/config"
)

func serve(ctx context.Context, cfg config.Worker, stderr io.Writer) error {
	return errors.New("not yet")
}
