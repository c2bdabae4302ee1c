package daemon_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// docs/ARCHITECTURE.md names every package of the module (as `dir/` in
// its package map), so a new package cannot land without a line there.
func TestArchitectureNamesEveryPackage(t *testing.T) {
	doc, err := os.ReadFile("../docs/ARCHITECTURE.md")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	err = filepath.WalkDir("..", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); p != ".." && (strings.HasPrefix(name, ".") || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		dir, _ := filepath.Rel("..", filepath.Dir(p))
		if dir == "." || seen[dir] {
			return nil
		}
		seen[dir] = true
		if !strings.Contains(string(doc), "`"+filepath.ToSlash(dir)+"/`") {
			t.Errorf("docs/ARCHITECTURE.md does not name package %s/", dir)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) < 10 {
		t.Fatalf("found only %d packages", len(seen))
	}
}
