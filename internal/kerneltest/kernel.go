package kerneltest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// Kernel is an installed kernel image and its modules.
type Kernel struct {
	Version    string // e.g. "6.1.0-56-amd64"
	Image      string // /boot/vmlinuz-VERSION
	ModulesDir string // /lib/modules/VERSION
}

// Where FindKernel looks; tests of the lookup use their own trees.
var (
	bootDir    = "/boot"
	modulesDir = "/lib/modules"
)

// FindKernel returns the newest Debian amd64 kernel installed on the host
// that has both an image in /boot and a modules.dep under /lib/modules. The
// running kernel does not matter (the host may run another one).
func FindKernel() (Kernel, error) {
	images, _ := filepath.Glob(filepath.Join(bootDir, "vmlinuz-*-amd64"))
	var found []Kernel
	for _, img := range images {
		v := strings.TrimPrefix(filepath.Base(img), "vmlinuz-")
		k := Kernel{Version: v, Image: img, ModulesDir: filepath.Join(modulesDir, v)}
		if _, err := os.Stat(filepath.Join(k.ModulesDir, "modules.dep")); err != nil {
			continue
		}
		found = append(found, k)
	}
	if len(found) == 0 {
		return Kernel{}, fmt.Errorf("no Debian kernel found: need %s/vmlinuz-VERSION-amd64 and %s/VERSION/modules.dep (apt-get install linux-image-amd64; found images %v)",
			bootDir, modulesDir, images)
	}
	sort.Slice(found, func(i, j int) bool { return versionLess(found[i].Version, found[j].Version) })
	return found[len(found)-1], nil
}

// versionLess compares kernel versions "6.1.0-56-amd64" numerically field by
// field.
func versionLess(a, b string) bool {
	fa := strings.FieldsFunc(a, func(r rune) bool { return r == '.' || r == '-' })
	fb := strings.FieldsFunc(b, func(r rune) bool { return r == '.' || r == '-' })
	for i := 0; i < len(fa) && i < len(fb); i++ {
		var na, nb int
		_, ea := fmt.Sscanf(fa[i], "%d", &na)
		_, eb := fmt.Sscanf(fb[i], "%d", &nb)
		if ea == nil && eb == nil {
			if na != nb {
				return na < nb
			}
			continue
		}
		if fa[i] != fb[i] {
			return fa[i] < fb[i]
		}
	}
	return len(fa) < len(fb)
}

// moduleName normalises a module file or name: "dm-snapshot.ko.xz" and
// "dm_snapshot" are both "dm_snapshot", as modprobe treats them.
func moduleName(s string) string {
	s = filepath.Base(s)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		s = strings.TrimSuffix(s, ext)
	}
	s = strings.TrimSuffix(s, ".ko")
	return strings.ReplaceAll(s, "-", "_")
}

// modDeps is modules.dep: module file (relative to the modules dir) -> the
// files it needs, and module name -> file.
type modDeps struct {
	deps  map[string][]string
	files map[string]string
}

func parseModulesDep(r io.Reader) (*modDeps, error) {
	md := &modDeps{deps: map[string][]string{}, files: map[string]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		file, rest, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("modules.dep: line without a colon: %q", line)
		}
		md.deps[file] = strings.Fields(rest)
		md.files[moduleName(file)] = file
	}
	return md, sc.Err()
}

// loadOrder returns the module files to insmod, dependencies first, each
// once, for the named modules. A name that is not a module is an error
// unless the kernel has it built in (listed in modules.builtin).
func (k Kernel) loadOrder(names []string) ([]string, error) {
	f, err := os.Open(filepath.Join(k.ModulesDir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	md, err := parseModulesDep(f)
	if err != nil {
		return nil, err
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(k.ModulesDir, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			builtin[moduleName(l)] = true
		}
	}
	return md.order(names, builtin)
}

func (md *modDeps) order(names []string, builtin map[string]bool) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	var visit func(file string, depth int) error
	visit = func(file string, depth int) error {
		if seen[file] {
			return nil
		}
		if depth > 64 {
			return fmt.Errorf("modules.dep: dependency loop at %s", file)
		}
		seen[file] = true
		deps, ok := md.deps[file]
		if !ok {
			return fmt.Errorf("modules.dep: %s is a dependency but has no line of its own", file)
		}
		for _, d := range deps {
			if err := visit(d, depth+1); err != nil {
				return err
			}
		}
		out = append(out, file)
		return nil
	}
	for _, n := range names {
		file, ok := md.files[moduleName(n)]
		if !ok {
			if builtin[moduleName(n)] {
				continue
			}
			return nil, fmt.Errorf("module %s is neither in modules.dep nor built in", n)
		}
		if err := visit(file, 0); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// readModule returns the module's ELF object, decompressing it if needed.
func readModule(path string) ([]byte, error) {
	switch {
	case strings.HasSuffix(path, ".ko"):
		return os.ReadFile(path)
	case strings.HasSuffix(path, ".gz"):
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return io.ReadAll(zr)
	case strings.HasSuffix(path, ".xz"), strings.HasSuffix(path, ".zst"):
		tool := "xz"
		if strings.HasSuffix(path, ".zst") {
			tool = "zstd"
		}
		var out, errb bytes.Buffer
		cmd := exec.Command(tool, "-dc", path)
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("decompress %s with %s: %w: %s", path, tool, err, errb.String())
		}
		return out.Bytes(), nil
	}
	return nil, errors.New("unknown module file type: " + path)
}
