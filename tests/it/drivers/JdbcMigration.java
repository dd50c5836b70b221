// A schema migration run directly on the database while pgjdbc sessions hold prepared statements,
// run by tests/it/drivers/migration.rs with the single-file source launcher:
//   java -cp postgresql.jar JdbcMigration.java HOST PORT DIRECT_PORT DB USER PASSWORD THRESHOLD
// Four connections to HOST:PORT (sluice, or the database itself for the baseline) take turns
// executing `select * from mig_t where id = ?` and `select cast(? as mig_mood)::text`; between
// rounds a fifth connection, always straight to DIRECT_PORT, runs what a migration tool runs:
// ALTER TABLE ... ADD COLUMN, then DROP TYPE / CREATE TYPE of the enum. Prints one line per phase,
// `PHASE name ok=N errors=N codes=SQLSTATE,...`, and `COLUMNS n` (columns the last row had).

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.TreeSet;

public class JdbcMigration {
    static String host, db, user, password, threshold;

    static Connection connect(String port) throws SQLException {
        String url = "jdbc:postgresql://" + host + ":" + port + "/" + db + "?sslmode=disable"
                + "&connectTimeout=10&socketTimeout=60&prepareThreshold=" + threshold;
        return DriverManager.getConnection(url, user, password);
    }

    public static void main(String[] a) throws Exception {
        host = a[0];
        String port = a[1], directPort = a[2];
        db = a[3];
        user = a[4];
        password = a[5];
        threshold = a[6];
        Connection admin = connect(directPort);
        ddl(admin, "drop table if exists mig_t", "drop type if exists mig_mood",
                "create type mig_mood as enum ('happy', 'sad')",
                "create table mig_t (id int primary key, v text)",
                "insert into mig_t select g, 'v' || g from generate_series(1, 10) g");
        List<Connection> conns = new ArrayList<>();
        List<PreparedStatement> rows = new ArrayList<>(), casts = new ArrayList<>();
        for (int i = 0; i < 4; i++) {
            Connection c = connect(port);
            conns.add(c);
            rows.add(c.prepareStatement("select * from mig_t where id = ?"));
            casts.add(c.prepareStatement("select cast(? as mig_mood)::text"));
        }
        phase("warm", rows, casts, 10);
        ddl(admin, "alter table mig_t add column extra int default 7");
        phase("after_alter", rows, casts, 20);
        ddl(admin, "drop type mig_mood", "create type mig_mood as enum ('happy', 'sad', 'ok')");
        phase("after_type", rows, casts, 20);
        // A session that arrives after the migration must see the new shape at once.
        try (Connection late = connect(port);
                PreparedStatement p = late.prepareStatement("select * from mig_t where id = ?")) {
            int cols = 0;
            for (int i = 0; i < 10; i++) {
                p.setInt(1, 1 + i % 10);
                try (ResultSet r = p.executeQuery()) {
                    r.next();
                    cols = r.getMetaData().getColumnCount();
                }
            }
            System.out.println("COLUMNS " + cols);
        }
        for (Connection c : conns) c.close();
        admin.close();
    }

    static void ddl(Connection c, String... sqls) throws SQLException {
        try (Statement s = c.createStatement()) {
            for (String sql : sqls) s.execute(sql);
        }
    }

    /// Each connection in turn runs both statements, `rounds` times; every error is counted.
    static void phase(String name, List<PreparedStatement> rows, List<PreparedStatement> casts,
            int rounds) {
        int ok = 0, errors = 0;
        TreeSet<String> codes = new TreeSet<>();
        for (int r = 0; r < rounds; r++) {
            for (int i = 0; i < rows.size(); i++) {
                try {
                    PreparedStatement p = rows.get(i);
                    p.setInt(1, 1 + r % 10);
                    try (ResultSet rs = p.executeQuery()) {
                        if (!rs.next() || rs.getInt(1) != 1 + r % 10) throw new AssertionError("row");
                    }
                    ok++;
                } catch (SQLException e) {
                    errors++;
                    codes.add(e.getSQLState());
                    System.err.println(name + ": " + e.getSQLState() + " " + e.getMessage().split("\n")[0]);
                }
                try {
                    PreparedStatement p = casts.get(i);
                    p.setString(1, "happy");
                    try (ResultSet rs = p.executeQuery()) {
                        if (!rs.next() || !"happy".equals(rs.getString(1))) throw new AssertionError("cast");
                    }
                    ok++;
                } catch (SQLException e) {
                    errors++;
                    codes.add(e.getSQLState());
                    System.err.println(name + ": " + e.getSQLState() + " " + e.getMessage().split("\n")[0]);
                }
            }
        }
        System.out.println("PHASE " + name + " ok=" + ok + " errors=" + errors + " codes="
                + String.join("|", codes));
    }
}
