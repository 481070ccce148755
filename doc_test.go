package gridbatch

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestTheMapNamesFilesThatHoldWhatItSays keeps doc.go true: every file it
// names exists, and a name it gives right after a file ("file, Name" or
// "file (Name") is declared in that file. Moving a rule fails it until the
// map follows.
func TestTheMapNamesFilesThatHoldWhatItSays(t *testing.T) {
	t.Parallel()
	f, err := parser.ParseFile(token.NewFileSet(), "doc.go", nil, parser.ParseComments|parser.PackageClauseOnly)
	require.NoError(t, err)
	text := f.Doc.Text()
	paths := regexp.MustCompile(`[\w/]+\.go\b`).FindAllString(text, -1)
	require.NotEmpty(t, paths)
	for _, p := range paths {
		_, err := os.Stat(p)
		require.NoError(t, err, "doc.go names %s", p)
	}
	pairs := regexp.MustCompile(`([\w/]+\.go)(?:,|\s\()\s*([A-Za-z][\w.]*)`).FindAllStringSubmatch(text, -1)
	require.NotEmpty(t, pairs)
	checked := 0
	for _, m := range pairs {
		path, name := m[1], m[2]
		if name == "package" {
			continue
		}
		name = name[strings.LastIndex(name, ".")+1:]
		require.Contains(t, declared(t, path), name, "doc.go says %s holds %s", path, m[2])
		checked++
	}
	require.GreaterOrEqual(t, checked, 10)
}

// declared returns the names path declares at its top level: functions,
// methods, types, variables and constants.
func declared(t *testing.T, path string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
	require.NoError(t, err)
	var names []string
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			names = append(names, d.Name.Name)
		case *ast.GenDecl:
			for _, s := range d.Specs {
				switch s := s.(type) {
				case *ast.TypeSpec:
					names = append(names, s.Name.Name)
				case *ast.ValueSpec:
					for _, n := range s.Names {
						names = append(names, n.Name)
					}
				}
			}
		}
	}
	return names
}
