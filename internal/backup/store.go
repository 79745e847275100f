// Package backup stores snapshots in an S3-compatible object store as
// content-addressed objects (SHA-256) plus one manifest per snapshot, and
// rebuilds volumes from them (docs/backup.md, "Object storage").
//
// It knows volumes only as something to read and write at offsets (the
// CLI hands it NBD connections) and object stores only through minio-go.
package backup

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Location is an s3://BUCKET/PREFIX URL, split.
type Location struct {
	Bucket string
	Prefix string // without leading or trailing slash; may be empty
}

func (l Location) String() string {
	if l.Prefix == "" {
		return "s3://" + l.Bucket
	}
	return "s3://" + l.Bucket + "/" + l.Prefix
}

// ParseURL splits s3://BUCKET[/PREFIX].
func ParseURL(s string) (Location, error) {
	rest, ok := strings.CutPrefix(s, "s3://")
	if !ok {
		return Location{}, fmt.Errorf("%q is not an s3://BUCKET/PREFIX URL", s)
	}
	bucket, prefix, _ := strings.Cut(rest, "/")
	prefix = strings.Trim(prefix, "/")
	if bucket == "" {
		return Location{}, fmt.Errorf("%q names no bucket: give s3://BUCKET/PREFIX", s)
	}
	for _, part := range strings.Split(prefix, "/") {
		if prefix != "" && (part == "" || part == "." || part == "..") {
			return Location{}, fmt.Errorf("%q: prefix %q has an empty, . or .. part", s, prefix)
		}
	}
	return Location{Bucket: bucket, Prefix: prefix}, nil
}

// SplitSnapshotURL splits s3://BUCKET/PREFIX/SNAP into the location and SNAP.
func SplitSnapshotURL(s string) (Location, string, error) {
	loc, err := ParseURL(s)
	if err != nil {
		return Location{}, "", err
	}
	i := strings.LastIndexByte(loc.Prefix, '/')
	name := loc.Prefix[i+1:]
	if name == "" {
		return Location{}, "", fmt.Errorf("%q names no snapshot: give s3://BUCKET/PREFIX/SNAPSHOT", s)
	}
	if i < 0 {
		loc.Prefix = ""
	} else {
		loc.Prefix = loc.Prefix[:i]
	}
	return loc, name, nil
}

// Config says how to reach the object store. Empty fields take the usual
// defaults: AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, then AWS S3 itself;
// AWS_REGION or AWS_DEFAULT_REGION; credentials from AWS_ACCESS_KEY_ID /
// AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN), MINIO_ROOT_USER /
// MINIO_ROOT_PASSWORD, ~/.aws/credentials (AWS_PROFILE,
// AWS_SHARED_CREDENTIALS_FILE), then an EC2 or ECS role.
type Config struct {
	Endpoint string // URL (http://host:port) or host[:port] (https)
	Region   string
}

// Store is one bucket and prefix of an object store.
type Store struct {
	c   *minio.Client
	loc Location
}

// Open connects to loc with cfg; it makes no request yet.
func Open(loc Location, cfg Config) (*Store, error) {
	endpoint := cmp.Or(cfg.Endpoint, os.Getenv("AWS_ENDPOINT_URL_S3"), os.Getenv("AWS_ENDPOINT_URL"))
	region := cmp.Or(cfg.Region, os.Getenv("AWS_REGION"), os.Getenv("AWS_DEFAULT_REGION"))
	secure, host, lookup := true, "s3.amazonaws.com", minio.BucketLookupAuto
	if endpoint != "" {
		if !strings.Contains(endpoint, "://") {
			endpoint = "https://" + endpoint
		}
		u, err := url.Parse(endpoint)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("endpoint %q: want http://HOST:PORT or https://HOST[:PORT]", cfg.Endpoint)
		}
		secure, host = u.Scheme == "https", u.Host
		// MinIO, Ceph and SeaweedFS serve buckets as paths by default.
		lookup = minio.BucketLookupPath
	} else if region != "" {
		host = "s3." + region + ".amazonaws.com"
	}
	c, err := minio.New(host, &minio.Options{
		Creds:        credentials.NewChainCredentials(credentialChain()),
		Secure:       secure,
		Region:       region,
		BucketLookup: lookup,
	})
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", host, err)
	}
	return &Store{c: c, loc: loc}, nil
}

func credentialChain() []credentials.Provider {
	file := os.Getenv("AWS_SHARED_CREDENTIALS_FILE")
	if file == "" {
		if home, err := os.UserHomeDir(); err == nil {
			file = filepath.Join(home, ".aws", "credentials")
		}
	}
	return []credentials.Provider{
		&credentials.EnvAWS{},
		&credentials.EnvMinio{},
		&credentials.FileAWSCredentials{Filename: file, Profile: os.Getenv("AWS_PROFILE")},
		&credentials.IAM{},
	}
}

func (s *Store) key(rel string) string {
	if s.loc.Prefix == "" {
		return rel
	}
	return s.loc.Prefix + "/" + rel
}

// objectKey is where the object of SHA-256 sum lives.
func objectKey(sum string) string { return "chunks/" + sum[:2] + "/" + sum }

// manifestKey is where snapshot name's manifest lives.
func manifestKey(name string) string { return "snapshots/" + name + ".json" }

// errNotFound is a missing object.
var errNotFound = errors.New("not found")

func (s *Store) wrap(op, rel string, err error) error {
	var resp minio.ErrorResponse
	if errors.As(err, &resp) {
		switch resp.Code {
		case "NoSuchKey":
			return fmt.Errorf("%s/%s: %w", s.loc, rel, errNotFound)
		case "NoSuchBucket":
			return fmt.Errorf("%s %s/%s: bucket %q does not exist: create it first (aws s3 mb s3://%s)", op, s.loc, rel, s.loc.Bucket, s.loc.Bucket)
		case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch":
			return fmt.Errorf("%s %s/%s: %s (%s): check the credentials (AWS_ACCESS_KEY_ID, ~/.aws/credentials) and --endpoint", op, s.loc, rel, resp.Message, resp.Code)
		}
	}
	return fmt.Errorf("%s %s/%s: %w", op, s.loc, rel, err)
}

// put stores data at rel in one PUT (an object appears whole or not at all).
func (s *Store) put(ctx context.Context, rel string, data []byte, contentType string) error {
	_, err := s.c.PutObject(ctx, s.loc.Bucket, s.key(rel), bytes.NewReader(data), int64(len(data)),
		minio.PutObjectOptions{ContentType: contentType, DisableMultipart: true, SendContentMd5: true})
	if err != nil {
		return s.wrap("upload", rel, err)
	}
	return nil
}

// get reads the object at rel whole, refusing one of more than max bytes.
func (s *Store) get(ctx context.Context, rel string, max int64) ([]byte, error) {
	obj, err := s.c.GetObject(ctx, s.loc.Bucket, s.key(rel), minio.GetObjectOptions{})
	if err != nil {
		return nil, s.wrap("download", rel, err)
	}
	defer obj.Close()
	data, err := io.ReadAll(io.LimitReader(obj, max+1))
	if err != nil {
		return nil, s.wrap("download", rel, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("download %s/%s: larger than the %d bytes it may be", s.loc, rel, max)
	}
	return data, nil
}

// list returns the keys (relative to the prefix) under rel with their sizes.
func (s *Store) list(ctx context.Context, rel string) (map[string]int64, error) {
	out := map[string]int64{}
	for obj := range s.c.ListObjects(ctx, s.loc.Bucket, minio.ListObjectsOptions{Prefix: s.key(rel), Recursive: true}) {
		if obj.Err != nil {
			return nil, s.wrap("list", rel, obj.Err)
		}
		k := obj.Key
		if s.loc.Prefix != "" {
			k = strings.TrimPrefix(k, s.loc.Prefix+"/")
		}
		out[k] = obj.Size
	}
	return out, nil
}

// exists reports whether rel is there, by HEAD.
func (s *Store) exists(ctx context.Context, rel string) (bool, error) {
	_, err := s.c.StatObject(ctx, s.loc.Bucket, s.key(rel), minio.StatObjectOptions{})
	if err == nil {
		return true, nil
	}
	if err = s.wrap("look up", rel, err); errors.Is(err, errNotFound) {
		return false, nil
	}
	return false, err
}
